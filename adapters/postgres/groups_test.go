package postgres_test

import (
	"context"
	"testing"

	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/storetest"
)

// grouped sends every decision through DecideGroupsBounded with a peek of an unrelated key as a first group, so
// each call takes sluice_decide_groups' path for several groups (locks taken up front across the statement, each
// group decided by its own sluice_decide_batch call) rather than the one-group shortcut; a call that finds a row
// locked beyond the lock wait is sent again as DecideBatch, as the coalescer does.
type grouped struct{ *postgres.Store }

var probe = domain.BucketRequest{Policy: "groups-probe", Key: "probe", Rule: domain.Rule{Algorithm: domain.SlidingWindow, Limit: 1, Window: 3600e9, Resolution: 60e9}}

func (g grouped) Decide(ctx context.Context, r domain.BucketRequest) (domain.Decision, error) {
	ds, err := g.decide(ctx, []domain.BucketRequest{r}, false)
	if err != nil {
		return domain.Decision{}, err
	}
	return ds[0], nil
}

func (g grouped) DecideBatch(ctx context.Context, rs []domain.BucketRequest, atomic bool) ([]domain.Decision, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	return g.decide(ctx, rs, atomic)
}

func (g grouped) decide(ctx context.Context, rs []domain.BucketRequest, atomic bool) ([]domain.Decision, error) {
	all := append([]domain.BucketRequest{probe}, rs...)
	ds, busy, err := g.DecideGroupsBounded(ctx, all, []int{1, len(all)}, []bool{false, atomic})
	if busy {
		return g.Store.DecideBatch(ctx, rs, atomic)
	}
	if err != nil {
		return nil, err
	}
	return ds[1:], nil
}

// TestConformanceGroups runs the conformance suite with every check and batch decided as one group among several
// of a sluice_decide_groups statement: each group must be decided exactly as sluice_decide_batch decides it alone.
func TestConformanceGroups(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		return grouped{open(t, postgres.Options{Clock: clock})}
	})
}

// Bad group bounds are an error, never a decision.
func TestDecideGroupsRefusesBadEnds(t *testing.T) {
	s := open(t, postgres.Options{})
	rs := []domain.BucketRequest{probe, probe}
	for _, c := range []struct {
		ends   []int
		atomic []bool
	}{{[]int{1}, []bool{true}}, {[]int{1, 2}, []bool{true}}, {nil, nil}, {[]int{2, 2}, []bool{true, true}}} {
		if ds, _, err := s.DecideGroupsBounded(context.Background(), rs, c.ends, c.atomic); err == nil {
			t.Errorf("ends %v, atomic %v: decisions %+v, want an error", c.ends, c.atomic, ds)
		}
	}
}
