package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/sethvargo/go-retry"
	"go.uber.org/fx"

	"github.com/sluice-dev/sluice/domain"
)

// registrar keeps a shared store's registry of config policies (rlsRegistry: the stores' RegisterConfigPolicies)
// equal to this replica's config-file and RLS policies in force. It registers at start-up and again after each
// Kick (an RLS install, a config reload), always what is in force at that attempt, and retries with exponential
// backoff (from base, doubling, at most 30 s between tries) while the store cannot answer; kicks that arrive
// meanwhile fold into one registration after it. The store keeps one registered set per replica (Redis registers
// it again after losing its data), which is why both sources go together. With no registry (a store that is not
// shared) it does nothing.
type registrar struct {
	registry rlsRegistry
	policies *domain.PolicyLifecycle
	log      *slog.Logger
	kick     chan struct{}
	base     time.Duration
}

func newRegistrar(lc fx.Lifecycle, registry rlsRegistry, policies *domain.PolicyLifecycle, log *slog.Logger) *registrar {
	r := &registrar{registry: registry, policies: policies, log: log, kick: make(chan struct{}, 1), base: time.Second}
	if registry == nil {
		return r
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	lc.Append(fx.Hook{
		OnStart: func(context.Context) error {
			r.Kick()
			go func() { defer close(done); r.run(ctx) }()
			return nil
		},
		OnStop: func(context.Context) error {
			cancel()
			<-done
			return nil
		},
	})
	return r
}

// Kick asks for a registration of the policies in force (it never blocks).
func (r *registrar) Kick() {
	select {
	case r.kick <- struct{}{}:
	default: // one is pending: it will read the policies in force when it runs
	}
}

// run registers after each kick until ctx ends.
func (r *registrar) run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.kick:
		}
		backoff := retry.WithCappedDuration(30*time.Second, retry.NewExponential(r.base))
		failed := 0
		_ = retry.Do(ctx, backoff, func(ctx context.Context) error {
			ps := append(r.policies.Config(), r.policies.RLS()...)
			if err := r.registry(ctx, ps); err != nil {
				if ctx.Err() != nil {
					return err
				}
				// The first try at start-up may precede the schema (migrations run beside it): quiet once.
				level := slog.LevelWarn
				if failed++; failed == 1 {
					level = slog.LevelDebug
				}
				r.log.Log(ctx, level, "cannot register the config and RLS policies with the store yet; retrying (until then this replica decides with its own floors)", "err", err)
				return retry.RetryableError(err)
			}
			return nil
		})
	}
}
