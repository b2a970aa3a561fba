package postgres

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/adapters/postgres/internal/db"
	"github.com/sluice-dev/sluice/domain"
)

// policyCache holds every API policy in memory, so a check never pays a round trip to look its policy up.
//
// The cache is not what decides: every check of an API policy is sent as BucketRequest.Stored, and
// sluice_decide_batch decides it with the policy as the database holds it at that statement. The cache serves
// what a replica needs before the round trip: the failure_mode to apply if the database cannot answer, and the
// fields of the response. It is reloaded every Options.PolicyRefresh (1s by default) and updated at once by this
// replica's own writes; a name it does not hold is checked with a provisional policy (CheckPolicy), so a policy
// created through another replica binds here at the next check, not after a reload. While the database is
// unreachable the last copy is kept (so each API policy's failure_mode still applies).
type policyCache struct {
	mu     sync.RWMutex
	m      map[string]domain.Policy
	loaded bool
	gen    uint64 // bumped by local writes, so a reload that raced one does not undo it
}

func (c *policyCache) init() { c.m = map[string]domain.Policy{} }

func (c *policyCache) get(name string) (domain.Policy, bool, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	p, ok := c.m[name]
	return p, ok, c.loaded
}

// replace installs a full reload taken when the generation was gen.
func (c *policyCache) replace(ps []domain.Policy, gen uint64) {
	m := make(map[string]domain.Policy, len(ps))
	for _, p := range ps {
		m[p.Name] = p
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.gen != gen {
		return // a local write happened meanwhile; the next reload will include it
	}
	c.m, c.loaded = m, true
}

func (c *policyCache) generation() uint64 {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.gen
}

func (c *policyCache) put(p domain.Policy) {
	c.mu.Lock()
	c.m[p.Name] = p
	c.gen++
	c.mu.Unlock()
}

func (c *policyCache) remove(name string) {
	c.mu.Lock()
	delete(c.m, name)
	c.gen++
	c.mu.Unlock()
}

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
	gen := s.policies.generation()
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
	s.policies.replace(ps, gen)
	return ps, nil
}

// ListPolicies implements domain.PolicyStore, sorted by name. It reads the table (an admin call, not a check).
func (s *Store) ListPolicies(ctx context.Context) ([]domain.Policy, error) {
	return s.loadPolicies(ctx)
}

// errPoliciesNotLoaded: no reload has succeeded yet, so the store cannot tell whether a policy exists.
var errPoliciesNotLoaded = errors.New("postgres: API policies not loaded yet (database unreachable or not migrated)")

// CheckPolicy implements domain.CheckPolicyGetter: the cached policy, or, for a name the cache does not hold, a
// provisional one (failure_mode deny, the largest limit so the cost is judged by the database's copy) that the
// decision statement replaces with the policy in force, answering StatusPolicyNotFound when there is none.
func (s *Store) CheckPolicy(_ context.Context, name string) (domain.Policy, error) {
	if p, ok, _ := s.policies.get(name); ok {
		return p, nil
	}
	return domain.Policy{Name: name, Limit: domain.MaxLimit, Window: domain.MinWindow, Algorithm: domain.SlidingLog,
		FailureMode: domain.FailDeny, Source: domain.SourceAPI}, nil
}

// GetPolicy implements domain.PolicyStore from the cache: no round trip.
func (s *Store) GetPolicy(_ context.Context, name string) (domain.Policy, error) {
	p, ok, loaded := s.policies.get(name)
	switch {
	case ok:
		return p, nil
	case !loaded:
		return domain.Policy{}, errPoliciesNotLoaded
	default:
		return domain.Policy{}, domain.ErrPolicyNotFound
	}
}

// PutPolicy implements domain.PolicyStore.
func (s *Store) PutPolicy(ctx context.Context, p domain.Policy) (bool, error) {
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
	s.policies.put(p)
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
	s.policies.remove(name)
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
