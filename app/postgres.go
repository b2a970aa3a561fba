package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sethvargo/go-retry"
	"go.uber.org/fx"

	"github.com/sluice-dev/sluice/adapters/coalesce"
	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/domain"
)

// postgresModule wires the Postgres store: one pool per replica, the API-policy cache, the janitor and, when
// postgres.migrate_on_start is set, the migrations. Only this module opens a pool, so the memory store builds none.
//
// Nothing here blocks start-up on the database: the pool connects on first use, and migrate-on-start runs in the
// background (under an advisory lock, so replicas starting together migrate one at a time), retrying until it
// succeeds. Until the database answers and its schema is current, /readyz fails and checks get each policy's
// failure_mode. The store decides with the database's clock; the app clock (and clock_offset) is not used.
func postgresModule(cfg Config) fx.Option {
	return fx.Module("store.postgres",
		fx.Provide(func(log *slog.Logger, reg prometheus.Registerer, lc fx.Lifecycle) (domain.BucketStore, domain.PolicyStore, rlsRegistry, error) {
			pc := cfg.Postgres
			log = log.With("store", "postgres")
			s, err := postgres.Open(context.Background(), postgres.Options{
				URL:              pc.URL,
				MaxConns:         int32(pc.MaxConns),
				StatementTimeout: time.Duration(pc.StatementTimeout),
				Logger:           log,
			})
			if err != nil {
				return nil, nil, nil, err
			}
			j, err := s.NewJanitor(postgres.JanitorOptions{
				Interval:   time.Duration(pc.JanitorInterval),
				Registerer: reg,
				Logger:     log,
			})
			if err != nil {
				s.Close()
				return nil, nil, nil, err
			}
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			lc.Append(fx.Hook{
				OnStart: func(context.Context) error {
					wg.Add(1)
					go func() {
						defer wg.Done()
						if pc.MigrateOnStart {
							migrateInBackground(ctx, s, pc.URL, log)
						}
					}()
					wg.Add(1)
					go func() { defer wg.Done(); j.Run(ctx) }()
					return nil
				},
				OnStop: func(context.Context) error {
					cancel()
					wg.Wait()
					s.Close()
					return nil
				},
			})
			// Checks go through the coalescer in lane mode: a hot key costs one round trip per batch instead of one
			// per check, and checks of different keys share round trips and commits. Decisions are exactly those of
			// running the checks one after another (see package coalesce). Atomic batches (RLS requests, atomic
			// /v1/checks) ride the same lanes, each all-or-nothing on its own in a shared statement.
			// The registrar (registrar.go) calls register with this replica's config and RLS policies; another
			// replica's file that defines one differently is logged and counted (sluice_config_policies_differing).
			differing := prometheus.NewGauge(prometheus.GaugeOpts{
				Name: "sluice_config_policies_differing",
				Help: "Config-file or RLS policies that another replica registered with another limit, window or algorithm (replicas' configs differ).",
			})
			if err := reg.Register(differing); err != nil {
				s.Close()
				return nil, nil, nil, err
			}
			replica, _ := os.Hostname()
			register := func(ctx context.Context, ps []domain.Policy) error {
				diffs, err := s.RegisterConfigPolicies(ctx, ps, replica)
				if err != nil {
					return err
				}
				differing.Set(float64(len(diffs)))
				for _, d := range diffs {
					log.Warn("config or RLS policy differs from what another replica registered: the replicas' configs differ (or one has not reloaded yet), and each replica enforces its own (docs/operator.md, \"Config policies\")",
						"policy", d.Name, "other_replica", d.Replica, "other_limit", d.Limit, "other_window", domain.FormatDuration(d.Window), "other_algorithm", d.Algorithm)
				}
				return nil
			}
			return coalesce.New(s, coalesce.Options{Lanes: pc.lanes()}), s, register, nil
		}),
	)
}

// migrateInBackground applies pending migrations, retrying with exponential backoff (1 s doubling, at most 30 s
// between tries) while the database is unreachable or another replica holds the migration lock, until it succeeds
// or ctx ends.
func migrateInBackground(ctx context.Context, s *postgres.Store, url string, log *slog.Logger) {
	backoff := retry.WithCappedDuration(30*time.Second, retry.NewExponential(time.Second))
	_ = retry.Do(ctx, backoff, func(ctx context.Context) error {
		res, err := postgres.Migrate(ctx, url, postgres.MigrateOptions{Logger: log})
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("postgres: migrate at start-up failed; /readyz fails until it succeeds", "err", err)
			}
			return retry.RetryableError(err)
		}
		v, _ := postgres.LatestVersion()
		log.Info("postgres: schema is current", "version", v, "applied_now", len(res))
		if err := s.RefreshPolicies(ctx); err != nil && ctx.Err() == nil {
			log.Warn("postgres: cannot load API policies yet; retrying in the background", "err", err)
		}
		return nil
	})
}

// migrateCommand runs `sluice migrate up|status` against postgres.url (SLUICE_POSTGRES_URL).
func migrateCommand(ctx context.Context, cfg Config, args []string, stdout io.Writer) error {
	if len(args) != 1 {
		return errors.New("usage: sluice migrate up|status")
	}
	o := postgres.MigrateOptions{}
	switch args[0] {
	case "up":
		res, err := postgres.Migrate(ctx, cfg.Postgres.URL, o)
		for _, r := range res {
			if r.Error != nil {
				fmt.Fprintf(stdout, "FAILED  %s: %v\n", r.Source.Path, r.Error)
				continue
			}
			fmt.Fprintf(stdout, "applied %s (%s)\n", r.Source.Path, r.Duration.Round(time.Millisecond))
		}
		if err != nil {
			return err
		}
		v, err := postgres.LatestVersion()
		if err != nil {
			return err
		}
		if len(res) == 0 {
			fmt.Fprintf(stdout, "schema already at version %d: nothing to apply\n", v)
		} else {
			fmt.Fprintf(stdout, "schema now at version %d\n", v)
		}
		return nil
	case "status":
		st, err := postgres.MigrationStatus(ctx, cfg.Postgres.URL, o)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "VERSION\tSTATE\tAPPLIED AT\tFILE")
		pending := 0
		for _, m := range st {
			at := "-"
			if !m.AppliedAt.IsZero() {
				at = m.AppliedAt.UTC().Format(time.RFC3339)
			}
			if m.State != "applied" {
				pending++
			}
			fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", m.Source.Version, m.State, at, m.Source.Path)
		}
		tw.Flush()
		if pending > 0 {
			fmt.Fprintf(stdout, "%d pending: run `sluice migrate up`\n", pending)
		} else {
			fmt.Fprintln(stdout, "schema is current")
		}
		return nil
	default:
		return fmt.Errorf("usage: sluice migrate up|status (unknown subcommand %q)", args[0])
	}
}

// DefaultLanes is the number of coalescer lanes when postgres.lanes is 0 (and max_conns allows it). Measured on
// 2 CPUs shared with PostgreSQL (docs/benchmarks.md, run E), uniform keys, 64 connections, pool of 16: 2 lanes
// 10,763-11,684 checks/s, 4 lanes 8,448-9,942, 8 lanes 7,600-10,342, 16 lanes 6,292-6,654. Fewer lanes make
// bigger batches, so fewer round trips and commits per check; 4 keeps some parallelism for a database with more
// cores, and leaves most of the pool to what bypasses the lanes (checks re-sent per key after a lane gave up on
// a locked row, atomic multi-checks, resets, the policy cache, the janitor).
const DefaultLanes = 4

// lanes is the coalescer's lane count: postgres.lanes, or min(DefaultLanes, max_conns) when it is 0.
func (pc PostgresConfig) lanes() int {
	if pc.Lanes > 0 {
		return pc.Lanes
	}
	return max(min(DefaultLanes, pc.MaxConns), 1)
}
