package domain

import (
	"context"
	"sort"
	"sync"
)

// PolicyCache is a replica's copy of the API policies a shared store holds, so that resolving a check's policy
// never pays a round trip. It is not what decides: a shared store decides every check of an API policy with the
// policy it holds at that decision (BucketRequest.Stored). The copy serves what a replica needs before the round
// trip: the failure_mode to apply if the store cannot answer, and the fields of the response.
//
// A store adapter fills it in one of two ways, by what its store offers:
//   - A store without a version of the whole set (Postgres): full reloads (BeginReload, then Install with what it
//     read) and its own writes (Put, Remove), which take effect at once. A reload that started before a local
//     write finished is not installed (it may not hold that write), so a reload never undoes a newer local write;
//     the next reload will hold it.
//   - A store with a version counter of the whole set (Redis): InstallVersion installs a reload read at a version
//     unless a newer one is held, ApplyVersion a local write that is exactly the next version (otherwise the
//     adapter reloads), Offer one record the store answered with (a check found the copy stale), and
//     ForgetVersion starts the versions again after the store lost its data.
//
// Until the first install, the cache is not loaded: Get and Loaded fail with the error given to NewPolicyCache,
// while CheckPolicy answers provisionally. Safe for concurrent use.
type PolicyCache struct {
	notLoaded error

	mu      sync.RWMutex
	m       map[string]Policy
	loaded  bool
	writes  uint64 // local writes so far (Put, Remove)
	version int64  // the store's version of the set held (InstallVersion, ApplyVersion)
}

// ReloadToken marks the start of a reload: the local writes the cache had seen then.
type ReloadToken struct{ writes uint64 }

// NewPolicyCache returns an empty, unloaded cache; notLoaded is the error Get and Loaded return until the first
// Install (it says why, e.g. "API policies not loaded yet (database unreachable or not migrated)").
func NewPolicyCache(notLoaded error) *PolicyCache {
	return &PolicyCache{notLoaded: notLoaded, m: map[string]Policy{}}
}

// BeginReload is called before reading every policy from the store; its token goes to Install.
func (c *PolicyCache) BeginReload() ReloadToken {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return ReloadToken{c.writes}
}

// Install replaces the copy with ps, read from the store after BeginReload gave t, unless a local write happened
// since t (then it reports false and the copy stays: the next reload will hold that write).
func (c *PolicyCache) Install(ps []Policy, t ReloadToken) bool {
	m := make(map[string]Policy, len(ps))
	for _, p := range ps {
		m[p.Name] = p
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.writes != t.writes {
		return false
	}
	c.m, c.loaded = m, true
	return true
}

// Put records a policy this replica wrote to the store (with the floor and generation the store gave it).
func (c *PolicyCache) Put(p Policy) {
	c.mu.Lock()
	c.m[p.Name] = p
	c.writes++
	c.mu.Unlock()
}

// Remove records a policy this replica deleted from the store.
func (c *PolicyCache) Remove(name string) {
	c.mu.Lock()
	delete(c.m, name)
	c.writes++
	c.mu.Unlock()
}

// Get returns the cached policy: ErrPolicyNotFound when the loaded copy has no such name, the notLoaded error
// before the first install.
func (c *PolicyCache) Get(name string) (Policy, error) {
	c.mu.RLock()
	p, ok := c.m[name]
	loaded := c.loaded
	c.mu.RUnlock()
	switch {
	case ok:
		return p, nil
	case !loaded:
		return Policy{}, c.notLoaded
	}
	return Policy{}, ErrPolicyNotFound
}

// List returns the cached policies, sorted by name (the notLoaded error before the first install).
func (c *PolicyCache) List() ([]Policy, error) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.loaded {
		return nil, c.notLoaded
	}
	out := make([]Policy, 0, len(c.m))
	for _, p := range c.m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// CheckPolicy implements the lookup of CheckPolicyGetter for a store that decides with its own copy: the cached
// policy, or, for a name the cache does not hold (loaded or not), a provisional one: failure_mode deny and the
// largest limit, so the cost is judged by the store's copy, which replaces it at the decision and answers
// StatusPolicyNotFound when there is none. A policy created through another replica so binds here at the next
// check, not after a reload.
func (c *PolicyCache) CheckPolicy(name string) Policy {
	c.mu.RLock()
	p, ok := c.m[name]
	c.mu.RUnlock()
	if ok {
		return p
	}
	return Policy{Name: name, Limit: MaxLimit, Window: MinWindow, Algorithm: SlidingLog, FailureMode: FailDeny, Source: SourceAPI}
}

// Loaded implements PolicyLoader: nil once a reload was installed.
func (c *PolicyCache) Loaded(context.Context) error {
	c.mu.RLock()
	defer c.mu.RUnlock()
	if !c.loaded {
		return c.notLoaded
	}
	return nil
}

// InstallVersion replaces the copy with ps, read from the store at its version v, unless the copy is already at a
// newer version (a reload that raced a newer one). It reports whether it installed.
func (c *PolicyCache) InstallVersion(ps []Policy, v int64) bool {
	m := make(map[string]Policy, len(ps))
	for _, p := range ps {
		m[p.Name] = p
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.loaded && v < c.version {
		return false
	}
	c.m, c.version, c.loaded = m, v, true
	return true
}

// ApplyVersion applies this replica's own change, made at the store's version v, when the copy is at v - 1 (no
// other change happened meanwhile): p is put, or, when p is nil, name is removed. Otherwise it changes nothing and
// reports false: the adapter reloads.
func (c *PolicyCache) ApplyVersion(v int64, name string, p *Policy) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.loaded || v != c.version+1 {
		return false
	}
	c.set(name, p)
	c.version = v
	return true
}

// Offer installs one record the store answered with at a decision (the copy was stale): p is put, or, when p is
// nil, name is removed. The version of the set is left as it is (the next reload brings the rest).
func (c *PolicyCache) Offer(name string, p *Policy) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.set(name, p)
}

// ForgetVersion is for a store that lost its data and numbers its versions again: the next InstallVersion is
// installed whatever its version. It returns the policies held, for the adapter to restore.
func (c *PolicyCache) ForgetVersion() []Policy {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.version = 0
	out := make([]Policy, 0, len(c.m))
	for _, p := range c.m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Version reports the store's version of the set held and whether a copy is loaded.
func (c *PolicyCache) Version() (int64, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.version, c.loaded
}

// Held returns the cached policy of name, if any (no error for an unloaded cache).
func (c *PolicyCache) Held(name string) (Policy, bool) {
	c.mu.RLock()
	p, ok := c.m[name]
	c.mu.RUnlock()
	return p, ok
}

// set puts p as name, or removes name when p is nil; c.mu is held.
func (c *PolicyCache) set(name string, p *Policy) {
	if p != nil {
		c.m[name] = *p
	} else {
		delete(c.m, name)
	}
}
