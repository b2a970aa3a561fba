package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/sluice-dev/sluice/adapters/postgres/internal/db"
	"github.com/sluice-dev/sluice/domain"
)

// The API policies: Store.policies (a domain.PolicyCache) holds every API policy in memory, so a check never pays
// a round trip to look its policy up. It is not what decides: every check of an API policy is sent as
// BucketRequest.Stored, and sluice_decide_batch decides it with the policy as the database holds it at that
// statement. The cache is reloaded every Options.PolicyRefresh (1s by default) and updated at once by this
// replica's own writes (a reload that raced one is not installed); a name it does not hold is checked with a
// provisional policy (CheckPolicy), so a policy created through another replica binds here at the next check,
// not after a reload. While the database is unreachable the last copy is kept (so each API policy's failure_mode
// still applies).

func (s *Store) refreshPolicies(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		_, err := s.loadPolicies(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			if pgErrCode(err) == codeUndefinedTable {
				s.log.Info("postgres: schema not migrated yet; API policies load once it is")
			} else {
				s.log.Warn("postgres: cannot reload API policies; keeping the last copy", "err", err)
			}
			failing = true
		case err == nil && failing:
			s.log.Info("postgres: API policies reloaded again")
			failing = false
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// RefreshPolicies reloads the API-policy cache now (the app calls it after migrating at start-up).
func (s *Store) RefreshPolicies(ctx context.Context) error {
	_, err := s.loadPolicies(ctx)
	return err
}

func (s *Store) loadPolicies(ctx context.Context) ([]domain.Policy, error) {
	t := s.policies.BeginReload()
	ctx, cancel := s.call(ctx)
	defer cancel()
	rows, err := s.q.ListPolicies(ctx)
	if err != nil {
		return nil, s.fail("list policies", err)
	}
	ps := make([]domain.Policy, len(rows))
	for i, r := range rows {
		ps[i] = domain.Policy{
			Name:        r.Name,
			Limit:       r.Quota,
			Window:      time.Duration(r.WindowMs) * time.Millisecond,
			Algorithm:   domain.Algorithm(r.Algorithm),
			Resolution:  time.Duration(r.ResolutionMs) * time.Millisecond,
			FailureMode: domain.FailureMode(r.FailureMode),
			Shadow:      r.Shadow,
			Source:      domain.SourceAPI,
			Floor:       r.FloorUs,
			Generation:  r.Generation,
		}
	}
	s.policies.Install(ps, t)
	return ps, nil
}

// ListPolicies implements domain.PolicyStore, sorted by name. It reads the table (an admin call, not a check).
func (s *Store) ListPolicies(ctx context.Context) ([]domain.Policy, error) {
	return s.loadPolicies(ctx)
}

// errPoliciesNotLoaded: no reload has succeeded yet, so the store cannot tell whether a policy exists.
var errPoliciesNotLoaded = errors.New("postgres: API policies not loaded yet (database unreachable or not migrated)")

// CheckPolicy implements domain.CheckPolicyGetter: the cached policy, or a provisional one
// (domain.PolicyCache.CheckPolicy) that the decision statement replaces with the policy in force, answering
// StatusPolicyNotFound when there is none.
func (s *Store) CheckPolicy(_ context.Context, name string) (domain.Policy, error) {
	return s.policies.CheckPolicy(name), nil
}

// GetPolicy implements domain.PolicyStore from the cache: no round trip.
func (s *Store) GetPolicy(_ context.Context, name string) (domain.Policy, error) {
	return s.policies.Get(name)
}

// Loaded implements domain.PolicyLoader: nil once a reload of the API policies succeeded.
func (s *Store) Loaded(ctx context.Context) error { return s.policies.Loaded(ctx) }

// PutPolicy implements domain.PolicyStore. A calendar period is refused (a validation problem naming period):
// this store does not decide them yet.
func (s *Store) PutPolicy(ctx context.Context, p domain.Policy) (bool, error) {
	if p.Period != nil {
		return false, domain.Invalid("period", "calendar periods are not decided by the postgres store yet (the memory store decides them)")
	}
	p = p.WithDefaults()
	p.Source = domain.SourceAPI
	ctx, cancel := s.call(ctx)
	defer cancel()
	row, err := s.q.PutPolicy(ctx, db.PutPolicyParams{
		Name:         p.Name,
		Quota:        p.Limit,
		WindowMs:     p.Window.Milliseconds(),
		Algorithm:    string(p.Algorithm),
		ResolutionMs: p.Resolution.Milliseconds(),
		FailureMode:  string(p.FailureMode),
		Shadow:       p.Shadow,
		NowUs:        s.now(),
	})
	if err != nil {
		return false, s.fail("put policy", err)
	}
	p.Floor, p.Generation = row.FloorUs, row.Generation
	s.policies.Put(p)
	return row.Created, nil
}

// DeletePolicy implements domain.PolicyStore. The policy's keys are dropped by the caller (DropPolicy).
func (s *Store) DeletePolicy(ctx context.Context, name string) error {
	ctx, cancel := s.call(ctx)
	defer cancel()
	n, err := s.q.DeletePolicy(ctx, name)
	if err != nil {
		return s.fail("delete policy", err)
	}
	s.policies.Remove(name)
	if n == 0 {
		return domain.ErrPolicyNotFound
	}
	return nil
}

// ConfigDifference is a config-file policy that another replica registered differently: the replicas' files
// differ (a rolling update, or a mistake).
type ConfigDifference struct {
	Name      string
	Replica   string // the replica that registered it last
	Limit     int64
	Window    time.Duration
	Algorithm domain.Algorithm
}

// RegisterConfigPolicies records this replica's config-file policies in sluice_config_policies, as the database
// last saw them, and returns those another replica had registered differently. A changed window or algorithm
// raises the policy's floor there (the expiry rule), which this replica's checks of the policy carry from then on;
// limits and windows stay each replica's own (config policies are per replica by nature: docs/operator.md).
func (s *Store) RegisterConfigPolicies(ctx context.Context, ps []domain.Policy, replica string) ([]ConfigDifference, error) {
	var diffs []ConfigDifference
	for _, p := range ps {
		cctx, cancel := s.call(ctx)
		row, err := s.q.RegisterConfigPolicy(cctx, db.RegisterConfigPolicyParams{
			Name: p.Name, Quota: p.Limit, WindowMs: p.Window.Milliseconds(), Algorithm: string(p.Algorithm),
			ResolutionMs: p.Resolution.Milliseconds(), Replica: replica, NowUs: s.now(),
		})
		cancel()
		if err != nil {
			return diffs, s.fail("register config policy", err)
		}
		s.configFloors.Store(p.Name, row.FloorUs)
		if row.PrevReplica != "" {
			diffs = append(diffs, ConfigDifference{Name: p.Name, Replica: row.PrevReplica, Limit: row.PrevQuota,
				Window: time.Duration(row.PrevWindowMs) * time.Millisecond, Algorithm: domain.Algorithm(row.PrevAlgorithm)})
		}
	}
	return diffs, nil
}
