package memory

import (
	"context"
	"sort"
	"sync"

	"github.com/sluice-dev/sluice/domain"
)

// Policies is the in-memory domain.PolicyStore: API policies of a memory-store replica, lost on restart (as its
// counters are). Safe for concurrent use.
//
// It keeps each policy's Floor and Generation (domain.Rule): a change of window, algorithm or calendar period
// (domain.CountingChanged) raises the floor to domain.NextFloor at the change, and every creation takes a new generation, so a re-created policy never counts
// the keys of the one deleted before it.
type Policies struct {
	mu  sync.RWMutex
	m   map[string]domain.Policy
	now func() int64 // unix µs
	gen int64        // the newest generation handed out
}

var _ domain.PolicyStore = (*Policies)(nil)

// NewPolicies returns an empty policy store whose floors are instants of clock. A memory Store's own Policies
// uses the store's clock; this is for tests and stores of other kinds.
func NewPolicies(clock domain.Clock) *Policies {
	return newPolicies(func() int64 { return clock.Now().UnixMicro() })
}

func newPolicies(now func() int64) *Policies {
	return &Policies{m: make(map[string]domain.Policy), now: now}
}

// ListPolicies implements domain.PolicyStore, sorted by name.
func (p *Policies) ListPolicies(context.Context) ([]domain.Policy, error) {
	p.mu.RLock()
	out := make([]domain.Policy, 0, len(p.m))
	for _, pol := range p.m {
		out = append(out, pol)
	}
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// GetPolicy implements domain.PolicyStore.
func (p *Policies) GetPolicy(_ context.Context, name string) (domain.Policy, error) {
	p.mu.RLock()
	pol, ok := p.m[name]
	p.mu.RUnlock()
	if !ok {
		return domain.Policy{}, domain.ErrPolicyNotFound
	}
	return pol, nil
}

// generation reports the generation of the policy in force under name, if any (the store checks stored checks
// against it, under the key's shard lock).
func (p *Policies) generation(name string) (int64, bool) {
	p.mu.RLock()
	pol, ok := p.m[name]
	p.mu.RUnlock()
	return pol.Generation, ok
}

// PutPolicy implements domain.PolicyStore.
func (p *Policies) PutPolicy(_ context.Context, pol domain.Policy) (bool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	old, existed := p.m[pol.Name]
	if existed {
		pol.Generation, pol.Floor = old.Generation, old.Floor
		if domain.CountingChanged(old, pol) {
			pol.Floor = domain.NextFloor(old, p.now())
		}
	} else {
		p.gen++
		pol.Generation, pol.Floor = p.gen, 0
	}
	p.m[pol.Name] = pol
	return !existed, nil
}

// DeletePolicy implements domain.PolicyStore.
func (p *Policies) DeletePolicy(_ context.Context, name string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.m[name]; !ok {
		return domain.ErrPolicyNotFound
	}
	delete(p.m, name)
	return nil
}
