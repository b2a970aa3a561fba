package memory

import (
	"context"
	"sort"
	"sync"

	"github.com/sluice-dev/sluice/domain"
)

// Policies is the in-memory domain.PolicyStore: API policies of a memory-store replica, lost on restart (as its
// counters are). Safe for concurrent use.
type Policies struct {
	mu sync.RWMutex
	m  map[string]domain.Policy
}

var _ domain.PolicyStore = (*Policies)(nil)

// NewPolicies returns an empty policy store.
func NewPolicies() *Policies { return &Policies{m: make(map[string]domain.Policy)} }

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

// PutPolicy implements domain.PolicyStore.
func (p *Policies) PutPolicy(_ context.Context, pol domain.Policy) (bool, error) {
	p.mu.Lock()
	_, existed := p.m[pol.Name]
	p.m[pol.Name] = pol
	p.mu.Unlock()
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
