package domain

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"
)

// The overrides the PolicyLifecycle holds (override.go has their semantics): a config policy's come from the
// config file (read-only over the API, replaced by InstallConfigWith at every reload); an API policy's are made
// over the API and live in this process, so they are offered only where the policies themselves are decided from
// this process's copy: the memory store. On a shared store an API policy is decided with the store's copy
// (BucketRequest.Stored), which knows no overrides yet, so they are refused there; a config policy's overrides
// travel with its checks as its rule does, on every store, but only as limits there: an override's own window
// needs a floor every replica agrees on, which the shared stores' registry keeps for policies alone.

// overrideBook is one policy's overrides. The lifecycle's books are an immutable map replaced whole when a book
// comes or goes (PolicyLifecycle.ovs), so a check of a policy without overrides takes no lock; a check of one
// with overrides takes its book's read lock. Changes take the lifecycle's ovMu, then the book's lock.
type overrideBook struct {
	gen    int64 // the generation of the policy they belong to: a re-created policy starts without
	config bool  // from the config file
	mu     sync.RWMutex
	set    *OverrideSet
}

// bookOf returns the book of the policy name, nil when none.
func (l *PolicyLifecycle) bookOf(name string) *overrideBook { return (*l.ovs.Load())[name] }

// setBook makes b the book of name (nil: none). Called with ovMu held.
func (l *PolicyLifecycle) setBook(name string, b *overrideBook) {
	old := *l.ovs.Load()
	m := make(map[string]*overrideBook, len(old)+1)
	for k, v := range old {
		m[k] = v
	}
	if b == nil {
		delete(m, name)
	} else {
		m[name] = b
	}
	l.ovs.Store(&m)
}

// ForKey is p (as ForCheck resolved it) as a check of key decides with it: with the limit, window and floor of
// the override that applies to the key, whose match it names (Policy.Override), or p itself when none does. A
// policy with overrides is decided with the policy as its overrides last saw it (Put brings them up to date right
// after every change), which is p or, for a check racing a change, the policy just before it. A book of another
// source (a removed config policy's, kept for its return) never applies to an API policy of the same name.
func (l *PolicyLifecycle) ForKey(p Policy, key string) Policy {
	b := l.bookOf(p.Name)
	if b == nil || b.gen != p.Generation || b.config != (p.Source == SourceConfig) {
		return p
	}
	b.mu.RLock()
	r, match := b.set.Rule(key)
	b.mu.RUnlock()
	p.Limit, p.Window, p.Resolution, p.Floor, p.Override = r.Limit, r.Window, r.Resolution, r.Floor, match
	return p
}

// syncOverrides brings the overrides of the API policy name up to date with the policy as the PolicyStore now
// holds it, changed at about now (read before the change): see changeInstant.
func (l *PolicyLifecycle) syncOverrides(ctx context.Context, name string, now int64) error {
	l.ovMu.Lock()
	defer l.ovMu.Unlock()
	b := l.bookOf(name)
	if b == nil {
		return nil
	}
	p, err := l.api.GetPolicy(ctx, name)
	if err != nil {
		return err
	}
	if b.gen != p.Generation {
		l.setBook(name, nil)
		return nil
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.set.policyIs(p) {
		b.set.PolicyChanged(p, changeInstant(b.set.policy, p, now))
	}
	return nil
}

// changeInstant is when old became p. A change of counting raised the floor to the change instant minus old's
// window (NextFloor) unless the floor was already past it: that gives the instant exactly. Otherwise it is now, an
// instant read just before the change, so no later than it: a floor taken from it may let a unit count a few
// microseconds longer than the expiry rule says (a stricter decision), never shorter.
func changeInstant(old, p Policy, now int64) int64 {
	if CountingChanged(old, p) && p.Floor > old.Floor {
		return p.Floor + int64(old.Window/time.Microsecond)
	}
	return now
}

// policyIs reports whether s was last given p's rule.
func (s *OverrideSet) policyIs(p Policy) bool {
	q := s.policy
	return q.Limit == p.Limit && q.Window == p.Window && q.Algorithm == p.Algorithm && q.Resolution == p.Resolution &&
		q.Floor == p.Floor && q.Generation == p.Generation && q.Period.Equal(p.Period)
}

// overridable resolves the policy whose overrides an API call reads or changes: ErrPolicyNotFound, or for a
// change (write) of a config policy ErrReadOnlyPolicy, and on a shared store an API policy's refused (see above).
func (l *PolicyLifecycle) overridable(ctx context.Context, name string, write bool) (Policy, error) {
	p, err := l.Get(ctx, name)
	if err != nil {
		return Policy{}, err
	}
	if p.Source == SourceConfig {
		if write {
			return Policy{}, fmt.Errorf("%w: %q (its overrides are in the config file too)", ErrReadOnlyPolicy, name)
		}
		return p, nil
	}
	if l.shared {
		return Policy{}, Invalid("policy", fmt.Sprintf("policy %q is an API policy on a shared store, which decides it with its own copy: overrides of API policies need the memory store for now (a config-file policy takes overrides of its limit on every store)", name))
	}
	return p, nil
}

// book returns p's overrides, made empty for its generation when none or another generation's. Called with ovMu
// held.
func (l *PolicyLifecycle) book(p Policy, config bool) *overrideBook {
	b := l.bookOf(p.Name)
	if b == nil || b.gen != p.Generation || b.config != config {
		b = &overrideBook{gen: p.Generation, config: config, set: NewOverrideSet(p)}
		l.setBook(p.Name, b)
	}
	return b
}

// PutOverride creates or replaces an override of an API policy and reports whether it is new.
func (l *PolicyLifecycle) PutOverride(ctx context.Context, policy string, o Override) (bool, error) {
	p, err := l.overridable(ctx, policy, true)
	if err != nil {
		return false, err
	}
	if err := ValidateOverride(p, o, ""); err != nil {
		return false, err
	}
	now := l.clock.Now().UnixMicro()
	l.ovMu.Lock()
	defer l.ovMu.Unlock()
	b := l.book(p, false)
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.set.tooManyLengths(o, now) {
		return false, Invalid("match", prefixLengthsProblem(p.Name))
	}
	return b.set.Put(o, now), nil
}

// GetOverride returns the override of policy with the given match.
func (l *PolicyLifecycle) GetOverride(ctx context.Context, policy, match string) (Override, error) {
	p, err := l.overridable(ctx, policy, false)
	if err != nil {
		return Override{}, err
	}
	if b := l.bookOf(p.Name); b != nil && b.gen == p.Generation {
		b.mu.RLock()
		o, ok := b.set.Get(match)
		b.mu.RUnlock()
		if ok {
			return o, nil
		}
	}
	return Override{}, fmt.Errorf("%w: %q of policy %q", ErrOverrideNotFound, match, policy)
}

// DeleteOverride deletes the override of policy with the given match.
func (l *PolicyLifecycle) DeleteOverride(ctx context.Context, policy, match string) error {
	p, err := l.overridable(ctx, policy, true)
	if err != nil {
		return err
	}
	now := l.clock.Now().UnixMicro()
	l.ovMu.Lock()
	defer l.ovMu.Unlock()
	if b := l.bookOf(p.Name); b != nil && b.gen == p.Generation {
		b.mu.Lock()
		deleted := b.set.Delete(match, now)
		b.mu.Unlock()
		if deleted {
			return nil
		}
	}
	return fmt.Errorf("%w: %q of policy %q", ErrOverrideNotFound, match, policy)
}

// ListOverrides returns up to n of policy's overrides in order after the match after ("": from the first) and
// whether more follow (OverrideSet.List).
func (l *PolicyLifecycle) ListOverrides(ctx context.Context, policy, after string, n int) ([]Override, bool, error) {
	p, err := l.overridable(ctx, policy, false)
	if err != nil {
		return nil, false, err
	}
	if b := l.bookOf(p.Name); b != nil && b.gen == p.Generation {
		b.mu.RLock()
		defer b.mu.RUnlock()
		out, more := b.set.List(after, n)
		return out, more, nil
	}
	return nil, false, nil
}

// installConfigOverrides makes ovs (by policy name) the overrides of the config policies fixed, as installed at now:
// each policy's changes and its overrides' at once (OverrideSet.Apply). Called with l.mu held.
func (l *PolicyLifecycle) installConfigOverrides(fixed []Policy, ovs map[string][]Override, now int64) {
	l.ovMu.Lock()
	defer l.ovMu.Unlock()
	for _, p := range fixed {
		want := ovs[p.Name]
		if l.bookOf(p.Name) == nil && len(want) == 0 {
			continue
		}
		b := l.book(p, true)
		b.mu.Lock()
		keep := make(map[string]bool, len(want))
		for _, o := range want {
			keep[o.Match] = true
		}
		var dels []string
		have, _ := b.set.List("", 0)
		for _, o := range have {
			if !keep[o.Match] {
				dels = append(dels, o.Match)
			}
		}
		b.set.Apply(p, want, dels, now)
		b.mu.Unlock()
	}
	// A config policy removed by this reload keeps its book: if it comes back, its keys' floors are still right
	// (its overrides come back with the file that brings it).
}

// ValidateConfigOverrides checks the overrides of the config policies fixed (as ConfigPolicies returned them, in the
// file's order; field names "policies[i].overrides[j].field"): ValidateOverride, no match twice, an override of a
// policy the file has, and on a shared store no window of their own. nil when all are valid.
func ValidateConfigOverrides(fixed []Policy, ovs map[string][]Override, shared bool) error {
	v := &ValidationError{}
	validateConfigOverrides(fixed, ovs, shared, v)
	return v.Err()
}

func validateConfigOverrides(fixed []Policy, ovs map[string][]Override, shared bool, v *ValidationError) {
	index := make(map[string]int, len(fixed))
	for i, p := range fixed {
		index[p.Name] = i
	}
	names := make([]string, 0, len(ovs))
	for name := range ovs {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		i, ok := index[name]
		if !ok {
			v.Add("overrides", fmt.Sprintf("overrides of %q, which is not a config policy", name))
			continue
		}
		seen := map[string]bool{}
		lengths := map[int]bool{}
		for j, o := range ovs[name] {
			if pre, ok := o.Prefix(); ok && !lengths[len(pre)] {
				lengths[len(pre)] = true
				if len(lengths) > MaxPrefixLengths {
					v.Add("policies["+strconv.Itoa(i)+"].overrides["+strconv.Itoa(j)+"].match", prefixLengthsProblem(name))
				}
			}
			prefix := "policies[" + strconv.Itoa(i) + "].overrides[" + strconv.Itoa(j) + "]."
			if err := ValidateOverride(fixed[i], o, prefix); err != nil {
				v.Fields = append(v.Fields, err.(*ValidationError).Fields...)
			}
			if seen[o.Match] {
				v.Add(prefix+"match", fmt.Sprintf("%q is overridden twice", o.Match))
			}
			seen[o.Match] = true
			if shared && o.Window != 0 {
				v.Add(prefix+"window", "on a shared store an override changes the limit only for now: its own window needs the memory store")
			}
		}
	}
}

// PutOverride implements Limiter.
func (s *Service) PutOverride(ctx context.Context, policy string, o Override) (bool, error) {
	if err := ValidatePolicyName(policy); err != nil {
		return false, Invalid("name", err.Error())
	}
	created, err := s.policies.PutOverride(ctx, policy, o)
	return created, s.overrideErr(policy, err)
}

// GetOverride implements Limiter.
func (s *Service) GetOverride(ctx context.Context, policy, match string) (Override, error) {
	if err := ValidatePolicyName(policy); err != nil {
		return Override{}, Invalid("name", err.Error())
	}
	o, err := s.policies.GetOverride(ctx, policy, match)
	return o, s.overrideErr(policy, err)
}

// DeleteOverride implements Limiter.
func (s *Service) DeleteOverride(ctx context.Context, policy, match string) error {
	if err := ValidatePolicyName(policy); err != nil {
		return Invalid("name", err.Error())
	}
	return s.overrideErr(policy, s.policies.DeleteOverride(ctx, policy, match))
}

// ListOverrides implements Limiter.
func (s *Service) ListOverrides(ctx context.Context, policy, after string, n int) ([]Override, bool, error) {
	if err := ValidatePolicyName(policy); err != nil {
		return nil, false, Invalid("name", err.Error())
	}
	out, more, err := s.policies.ListOverrides(ctx, policy, after, n)
	return out, more, s.overrideErr(policy, err)
}

// overrideErr keeps the domain's own errors and makes any other (the PolicyStore failing) ErrUnavailable.
func (s *Service) overrideErr(policy string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrInvalid), errors.Is(err, ErrPolicyNotFound), errors.Is(err, ErrReadOnlyPolicy),
		errors.Is(err, ErrOverrideNotFound):
		return err
	}
	return &UnavailableError{Policy: policy, Err: err}
}

func prefixLengthsProblem(policy string) string {
	return fmt.Sprintf("policy %q's prefix overrides would have more than %d distinct prefix lengths (every decision probes each length once): use fewer", policy, MaxPrefixLengths)
}
