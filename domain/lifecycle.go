package domain

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
)

// PolicyLoader is implemented by a PolicyStore that loads its API policies after start-up (from a shared store).
// Loaded returns nil once it can tell, for any name, whether an API policy has it (its first load succeeded), and
// an error saying why not before that. A PolicyStore that does not implement it is loaded from the start (the
// memory store).
type PolicyLoader interface {
	Loaded(ctx context.Context) error
}

// LifecycleOptions configure a PolicyLifecycle.
type LifecycleOptions struct {
	// SharedStore: the BucketStore is shared by replicas (the driver row's Shared). Replicas read an RLS config at
	// different instants and restart at different times, so a generation only one replica handed out would make
	// the replicas drop each other's state of the same keys (over-admitting); InstallRLS then keeps every RLS
	// policy at generation 0, and the store's registry keeps their floors (see InstallRLS).
	SharedStore bool
}

// PolicyLifecycle owns every policy sluice decides with, whatever its source: the config file's (read-only,
// resolved first), the API's (held by the PolicyStore, resolved after config) and the Envoy RLS config's (installed
// with InstallRLS at every reload). It keeps, for every source, what the expiry rule and the generation rule of
// shared/design.md need: API policies get their floors and generations from the PolicyStore (which records them
// atomically with the change); RLS policies from InstallRLS; config policies have generation 0 and, on a shared
// store, the floor the store registered. It also answers whether the API policies are loaded (Loaded), which is
// what readiness asks.
type PolicyLifecycle struct {
	// fixed holds the config-file policies in force (read-only, looked up first), replaced whole by InstallConfig:
	// a check reads it without a lock.
	fixed    atomic.Pointer[map[string]Policy]
	api      PolicyStore
	checkPol CheckPolicyGetter // api, when it implements it
	loader   PolicyLoader      // api, when it implements it
	clock    Clock
	shared   bool

	mu         sync.Mutex
	configSeen map[string]Policy // every config policy installed since start, as last in force (InstallConfig)
	rls        map[string]Policy // RLS policies in force, by name, as InstallRLS stamped them
	rlsHad     bool              // an install had at least one policy
	rlsGen     int64             // the newest RLS generation handed out

	ovMu sync.Mutex                               // serialises changes of overrides; taken after mu when both are
	ovs  atomic.Pointer[map[string]*overrideBook] // every policy's overrides, by policy name (overrides.go)
}

// NewPolicyLifecycle returns the lifecycle of the config file's policies (checked with ConfigPolicies) and the API
// policies of api. clock gives the instants of RLS floors.
func NewPolicyLifecycle(config []Policy, api PolicyStore, clock Clock, o LifecycleOptions) (*PolicyLifecycle, error) {
	fixed, err := ConfigPolicies(config)
	if err != nil {
		return nil, err
	}
	l := &PolicyLifecycle{api: api, clock: clock, shared: o.SharedStore, rls: map[string]Policy{},
		configSeen: make(map[string]Policy, len(fixed))}
	l.ovs.Store(&map[string]*overrideBook{})
	l.checkPol, _ = api.(CheckPolicyGetter)
	l.loader, _ = api.(PolicyLoader)
	m := make(map[string]Policy, len(fixed))
	for _, p := range fixed {
		m[p.Name] = p
		l.configSeen[p.Name] = p
	}
	l.fixed.Store(&m)
	return l, nil
}

// InstallConfig makes ps (the policies of a reloaded config file) the config policies in force, all at once, and
// returns them as installed (with defaults, floors and generation 0), sorted by name. ps is checked whole first
// (ConfigPolicies): on an error nothing changes. Against every config policy in force since start:
//   - a policy whose window, algorithm or calendar period changed gets the floor NextFloor gives at this instant, so units that had
//     stopped counting never count again; a changed limit keeps the floor; an unchanged policy keeps its floor;
//   - a policy removed by an earlier reload and back is compared with what it was when removed: its keys keep
//     their counts (generation 0, as on a restart of a shared store: it counts more, never less);
//   - a new name starts with no floor.
//
// The keys' state is untouched: the memory store's counters survive every reload. On a shared store the app
// registers the installed policies (RegisterConfigPolicies), which keeps one floor per name for every replica.
func (l *PolicyLifecycle) InstallConfig(ps []Policy) ([]Policy, error) {
	return l.InstallConfigWith(ps, nil)
}

// InstallConfigWith is InstallConfig with the config policies' overrides (by policy name; a policy not named has
// none): each policy and its overrides change at the same instant (OverrideSet.Apply).
func (l *PolicyLifecycle) InstallConfigWith(ps []Policy, ovs map[string][]Override) ([]Policy, error) {
	fixed, err := ConfigPolicies(ps)
	if err != nil {
		return nil, err
	}
	now := l.clock.Now().UnixMicro()
	l.mu.Lock()
	defer l.mu.Unlock()
	v := &ValidationError{}
	validateConfigOverrides(fixed, ovs, l.shared, v)
	for i, p := range fixed {
		if old, ok := l.configSeen[p.Name]; ok && kindChanged(old, p) {
			v.Add("policies["+strconv.Itoa(i)+"].algorithm", kindChangeProblem(old, p))
		}
	}
	if err := v.Err(); err != nil {
		return nil, err
	}
	m := make(map[string]Policy, len(fixed))
	for i, p := range fixed {
		p.Generation, p.Floor = 0, 0
		if old, ok := l.configSeen[p.Name]; ok {
			p.Floor = old.Floor
			if CountingChanged(old, p) {
				p.Floor = NextFloor(old, now)
			}
		}
		fixed[i] = p
		m[p.Name] = p
		l.configSeen[p.Name] = p
	}
	l.installConfigOverrides(fixed, ovs, now)
	l.fixed.Store(&m)
	sort.Slice(fixed, func(i, j int) bool { return fixed[i].Name < fixed[j].Name })
	return fixed, nil
}

// Config returns the config policies in force, sorted by name.
func (l *PolicyLifecycle) Config() []Policy {
	m := *l.fixed.Load()
	out := make([]Policy, 0, len(m))
	for _, p := range m {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// RLS returns the RLS policies in force (as InstallRLS stamped them), sorted by name.
func (l *PolicyLifecycle) RLS() []Policy {
	l.mu.Lock()
	out := make([]Policy, 0, len(l.rls))
	for _, p := range l.rls {
		out = append(out, p)
	}
	l.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// IsConfig reports whether name is a config-file policy (read-only over the API).
func (l *PolicyLifecycle) IsConfig(name string) bool {
	_, ok := (*l.fixed.Load())[name]
	return ok
}

// Get resolves a name for the API (GET, reset): config policies first, then the API's.
func (l *PolicyLifecycle) Get(ctx context.Context, name string) (Policy, error) {
	if p, ok := (*l.fixed.Load())[name]; ok {
		return p, nil
	}
	return l.api.GetPolicy(ctx, name)
}

// ForCheck resolves the policy a check is sent with: config policies first, then the API's, through
// CheckPolicyGetter when the store decides API policies with its own copy (the result may then be provisional).
func (l *PolicyLifecycle) ForCheck(ctx context.Context, name string) (Policy, error) {
	if p, ok := (*l.fixed.Load())[name]; ok {
		return p, nil
	}
	if l.checkPol != nil {
		return l.checkPol.CheckPolicy(ctx, name)
	}
	return l.api.GetPolicy(ctx, name)
}

// List returns config and API policies, sorted by name (an API policy a config policy shadows is left out).
func (l *PolicyLifecycle) List(ctx context.Context) ([]Policy, error) {
	api, err := l.api.ListPolicies(ctx)
	if err != nil {
		return nil, err
	}
	fixed := *l.fixed.Load()
	out := make([]Policy, 0, len(fixed)+len(api))
	for _, p := range fixed {
		out = append(out, p)
	}
	for _, p := range api {
		if _, shadowed := fixed[p.Name]; !shadowed {
			out = append(out, p)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Put creates or replaces an API policy (the PolicyStore gives it its floor and generation); config policies
// are read-only (ErrReadOnlyPolicy). p must be valid.
func (l *PolicyLifecycle) Put(ctx context.Context, p Policy) (bool, error) {
	if l.IsConfig(p.Name) {
		return false, fmt.Errorf("%w: %q", ErrReadOnlyPolicy, p.Name)
	}
	for _, prefix := range RLSPolicyPrefixes {
		if strings.HasPrefix(p.Name, prefix) {
			// An API policy of that name would share its keys' state with the RLS policy's.
			return false, Invalid("name", fmt.Sprintf("names starting with %q are the Envoy RLS front end's policies (%s)", prefix, strings.Join(RLSPolicyPrefixes, ", ")))
		}
	}
	old, err := l.api.GetPolicy(ctx, p.Name)
	switch {
	case err == nil && kindChanged(old, p):
		return false, Invalid("algorithm", kindChangeProblem(old, p))
	case err != nil && !errors.Is(err, ErrPolicyNotFound):
		return false, err
	}
	now := l.clock.Now().UnixMicro()
	created, err := l.api.PutPolicy(ctx, p)
	if err != nil {
		return false, err
	}
	return created, l.syncOverrides(ctx, p.Name, now)
}

// kindChanged: old and p count different things (units held at once under concurrency, units in a window
// otherwise), so no state of one means anything under the other: such a change is refused, under one name. (The
// API checks it against its replica's copy first; a change racing through another replica is still decided
// safely: a concurrency step counts only hold records, a window step converts a concurrency state's held units
// as recorded at that instant.)
func kindChanged(old, p Policy) bool { return old.Algorithm.HoldsOnly() != p.Algorithm.HoldsOnly() }

func kindChangeProblem(old, p Policy) string {
	return fmt.Sprintf("policy %q cannot change from %s to %s: concurrency counts units held at once, the others units in a window; delete it and create it again, or use a new name", p.Name, old.Algorithm, p.Algorithm)
}

// RLSPolicyPrefixes start the names of the policies the Envoy RLS front end makes from its config (adapters/
// envoyrls): API policies may not take them.
var RLSPolicyPrefixes = []string{"rls.", "rls-override."}

// Delete deletes an API policy (ErrReadOnlyPolicy for a config policy, ErrPolicyNotFound when none has the name).
func (l *PolicyLifecycle) Delete(ctx context.Context, name string) error {
	if l.IsConfig(name) {
		return fmt.Errorf("%w: %q", ErrReadOnlyPolicy, name)
	}
	if err := l.api.DeletePolicy(ctx, name); err != nil {
		return err
	}
	l.ovMu.Lock()
	if b := l.bookOf(name); b != nil && !b.config {
		l.setBook(name, nil) // a deleted policy drops its overrides
	}
	l.ovMu.Unlock()
	return nil
}

// Loaded reports whether the API policies are loaded: nil once the PolicyStore can tell for any name whether an
// API policy has it (PolicyLoader), always nil for a PolicyStore that holds them in process.
func (l *PolicyLifecycle) Loaded(ctx context.Context) error {
	if l.loader == nil {
		return nil
	}
	return l.loader.Loaded(ctx)
}

// InstallRLS makes ps (every policy of a loaded RLS config: files or an xDS version) the RLS policies in force and
// returns them with their Floor and Generation set, in the same order. Against the RLS policies in force before:
//   - a policy whose window (unit), algorithm or calendar period changed gets the floor NextFloor gives at this instant, so units
//     that had stopped counting never count again; a changed limit keeps the floor;
//   - an unchanged policy keeps its floor and generation;
//   - a policy not in force before (removed by an earlier install and back, or new) gets a new generation, so a
//     removed policy's keys never count against it when it comes back; so does one that changed between
//     concurrency and a window algorithm (they count different things). On a shared store (generations stay 0)
//     such a change gets the floor: a concurrency step counts only hold records, a window step converts the
//     units still held as recorded at that instant.
//
// Policies of the first install with any policy have generation 0 and no floor (a restart starts again from
// there; the memory store's counts are gone then too). With SharedStore set, generations stay 0 (a removed and
// re-added RLS policy keeps its keys' counts: it counts more, never less) and floors are kept as above, by each
// replica from the instant it reloaded; the app also registers the installed policies with the shared store
// (RegisterConfigPolicies), which keeps one floor per name that every replica's checks carry (the store decides
// with the higher of the two), so a replica that restarts after a change decides with it too.
func (l *PolicyLifecycle) InstallRLS(ps []Policy) []Policy {
	out := append([]Policy(nil), ps...)
	now := l.clock.Now().UnixMicro()
	l.mu.Lock()
	defer l.mu.Unlock()
	first := !l.rlsHad // no earlier install had a policy (xDS sends none before its first version)
	next := make(map[string]Policy, len(out))
	for i, p := range out {
		old, ok := l.rls[p.Name]
		if again, dup := next[p.Name]; dup {
			old, ok = again, true // one name twice in a config: one policy, one state
		}
		switch {
		case ok && kindChanged(old, p) && !l.shared:
			// Concurrency and a window count different things: a new incarnation, as for a removed policy.
			l.rlsGen++
			p.Generation, p.Floor = l.rlsGen, 0
		case ok:
			p.Generation, p.Floor = old.Generation, old.Floor
			if CountingChanged(old, p) {
				p.Floor = NextFloor(old, now)
			}
		case first || l.shared:
			p.Generation, p.Floor = 0, 0
		default:
			l.rlsGen++
			p.Generation, p.Floor = l.rlsGen, 0
		}
		out[i] = p
		next[p.Name] = p
	}
	l.rls = next
	l.rlsHad = l.rlsHad || len(next) > 0
	return out
}
