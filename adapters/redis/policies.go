package redis

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/sluice-dev/sluice/domain"
)

//go:embed policy.lua
var policySource string

var policyScript = rueidis.NewLuaScript(policySource)

//go:embed config.lua
var configSource string

var configScript = rueidis.NewLuaScript(configSource)

// RegisterConfigPolicies records this replica's config-file policies in Redis (config.lua) and keeps the floor of
// each: a policy whose window or algorithm differs from what the store last saw (the file changed across a
// redeploy) gets the floor domain.NextFloor gives at that instant, so units that had stopped counting never count
// again; a grown window also extends the expiry of the policy's keys (see Policies.PutPolicy). Checks of config
// policies (BucketRequest.Stored false) then decide with that floor. It returns the names whose window or
// algorithm changed.
func (s *Store) RegisterConfigPolicies(ctx context.Context, ps []domain.Policy) ([]string, error) {
	var changed []string
	key := "{sluice-policies}" + s.prefix + "config"
	for _, p := range ps {
		p = p.WithDefaults()
		cctx, cancel := context.WithTimeout(ctx, s.timeout)
		v, err := configScript.Exec(cctx, s.c, []string{key}, []string{p.Name, strconv.FormatInt(p.Window.Milliseconds(), 10), string(p.Algorithm), s.now()}).AsIntSlice()
		cancel()
		if err != nil {
			return changed, fmt.Errorf("redis register config policy %s: %w", p.Name, err)
		}
		s.configFloors.Store(p.Name, v[0])
		if v[1] == 1 {
			changed = append(changed, p.Name)
			// A grown window: the keys' expiries, set for the old one, are extended (as for API policies).
			if grow := p.Window - time.Duration(v[2])*time.Millisecond; v[2] > 0 && grow > 0 {
				if err := s.extendTTLs(ctx, p.Name, grow); err != nil {
					return changed, fmt.Errorf("redis register config policy %s: extending the keys' expiry: %w", p.Name, err)
				}
			}
		}
	}
	return changed, nil
}

// Policies is the Redis domain.PolicyStore: API policies live in one Redis hash (one slot of a cluster), with a
// version counter and a generation counter beside it in the same slot, changed only by policy.lua (atomic).
//
// Every replica holds a copy in memory, so a check never pays a round trip to look its policy up. How fast a
// change binds every replica: the replica that made it at once; every other replica when its invalidation
// arrives (pub/sub on the channel beside the hash, about one round trip), and at the latest one refresh interval
// (Options.Refresh, default 1s) after the change even if the message was lost, since each replica also reads the
// version counter every interval and reloads when it moved. Until then another replica decides with the policy
// it had (the stale window). While Redis is unreachable the last copy is kept; before the first load, lookups
// fail as a store error.
type Policies struct {
	s       *Store
	every   time.Duration // the refresh interval
	c       rueidis.Client
	hash    string // the policies hash
	version string
	gens    string
	channel string
	timeout time.Duration

	mu      sync.RWMutex
	m       map[string]domain.Policy
	loaded  bool
	seen    int64 // version of the copy held
	changed chan struct{}

	stop   context.CancelFunc
	closed <-chan struct{}
	done   sync.WaitGroup
}

var _ domain.PolicyStore = (*Policies)(nil)

// PolicyOptions configure Policies.
type PolicyOptions struct {
	// Refresh is the longest a change takes to reach this replica when its invalidation message is lost; ≤ 0
	// means 1s.
	Refresh time.Duration
}

// NewPolicies returns the policy store of s's Redis (with s's prefix) and starts its refresher; Close stops it.
func (s *Store) NewPolicies(o PolicyOptions) *Policies {
	if o.Refresh <= 0 {
		o.Refresh = time.Second
	}
	base := "{sluice-policies}" + s.prefix
	p := &Policies{
		s: s, every: o.Refresh,
		c: s.c, hash: base + "policies", version: base + "version", gens: base + "generations",
		channel: base + "changes", timeout: s.timeout, m: map[string]domain.Policy{}, changed: make(chan struct{}, 1),
	}
	ctx, stop := context.WithCancel(context.Background())
	p.stop = stop
	p.closed = ctx.Done()
	p.done.Add(2)
	go func() { defer p.done.Done(); p.subscribe(ctx) }()
	go func() { defer p.done.Done(); p.refresh(ctx, o.Refresh) }()
	return p
}

// Close stops the refresher and the subscription.
func (p *Policies) Close() {
	p.stop()
	p.done.Wait()
}

// subscribe turns invalidation messages into immediate reloads, reconnecting until ctx ends.
func (p *Policies) subscribe(ctx context.Context) {
	for ctx.Err() == nil {
		_ = p.c.Receive(ctx, p.c.B().Subscribe().Channel(p.channel).Build(), func(rueidis.PubSubMessage) {
			select {
			case p.changed <- struct{}{}:
			default:
			}
		})
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond): // reconnect pacing after a lost subscription
		}
	}
}

func (p *Policies) refresh(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		_ = p.reload(ctx, false)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-p.changed:
		}
	}
}

// reload reads the version and, when it moved (or force), the whole hash.
func (p *Policies) reload(ctx context.Context, force bool) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout+time.Second)
	defer cancel()
	v, err := p.c.Do(ctx, p.c.B().Get().Key(p.version).Build()).AsInt64()
	if err != nil && !rueidis.IsRedisNil(err) {
		return err
	}
	p.mu.RLock()
	same := p.loaded && p.seen == v
	p.mu.RUnlock()
	if same && !force {
		return nil
	}
	// The hash and the version are read in one script-free MULTI-less pair; a change between them is caught by
	// the next reload (the version read first can only be older than the hash read after it).
	kv, err := p.c.Do(ctx, p.c.B().Hgetall().Key(p.hash).Build()).AsStrMap()
	if err != nil {
		return err
	}
	m := make(map[string]domain.Policy, len(kv))
	for name, rec := range kv {
		pol, err := decodePolicy(name, rec)
		if err != nil {
			return err
		}
		m[name] = pol
	}
	p.mu.Lock()
	if !p.loaded || v >= p.seen {
		p.m, p.seen, p.loaded = m, v, true
	}
	p.mu.Unlock()
	return nil
}

// record: limit|window_ms|algorithm|resolution_ms|failure_mode|shadow|floor (µs)|generation
func encodePolicy(pol domain.Policy) []string {
	shadow := "0"
	if pol.Shadow {
		shadow = "1"
	}
	return []string{strconv.FormatInt(pol.Limit, 10), strconv.FormatInt(pol.Window.Milliseconds(), 10),
		string(pol.Algorithm), strconv.FormatInt(pol.Resolution.Milliseconds(), 10), string(pol.FailureMode), shadow}
}

func decodePolicy(name, rec string) (domain.Policy, error) {
	f := strings.Split(rec, "|")
	if len(f) != 8 {
		return domain.Policy{}, fmt.Errorf("redis: policy %q: malformed record %q", name, rec)
	}
	n := make([]int64, 8)
	for _, i := range []int{0, 1, 3, 6, 7} {
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return domain.Policy{}, fmt.Errorf("redis: policy %q: field %d of %q: %w", name, i, rec, err)
		}
		n[i] = v
	}
	return domain.Policy{
		Name: name, Limit: n[0], Window: time.Duration(n[1]) * time.Millisecond, Algorithm: domain.Algorithm(f[2]),
		Resolution: time.Duration(n[3]) * time.Millisecond, FailureMode: domain.FailureMode(f[4]), Shadow: f[5] == "1",
		Source: domain.SourceAPI, Floor: n[6], Generation: n[7],
	}, nil
}

// ListPolicies implements domain.PolicyStore, sorted by name: it reloads first (an admin call, not a check).
func (p *Policies) ListPolicies(ctx context.Context) ([]domain.Policy, error) {
	if err := p.reload(ctx, true); err != nil {
		return nil, fmt.Errorf("redis list policies: %w", err)
	}
	p.mu.RLock()
	out := make([]domain.Policy, 0, len(p.m))
	for _, pol := range p.m {
		out = append(out, pol)
	}
	p.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

var errPoliciesNotLoaded = errors.New("redis: API policies not loaded yet (Redis unreachable)")

// GetPolicy implements domain.PolicyStore from the copy: no round trip.
func (p *Policies) GetPolicy(_ context.Context, name string) (domain.Policy, error) {
	p.mu.RLock()
	pol, ok := p.m[name]
	loaded := p.loaded
	p.mu.RUnlock()
	switch {
	case ok:
		return pol, nil
	case !loaded:
		return domain.Policy{}, errPoliciesNotLoaded
	default:
		return domain.Policy{}, domain.ErrPolicyNotFound
	}
}

// PutPolicy implements domain.PolicyStore. policy.lua keeps the generation of an existing policy, gives a new one
// a generation never used before (so a deleted policy's keys never count for it), and on a change of window or
// algorithm raises the floor as domain.NextFloor does, at the change instant on the Redis clock: units that had
// stopped counting never come back when the window grows.
//
// When the window grows, the keys' expiries (set for the old window) are first extended by the growth, so a key
// that sees no decision before its old expiry keeps the units the longer window still counts; once the change is
// made, a second pass after the refresh interval extends the keys other replicas wrote meanwhile with the old
// window. A key written under the old window expires no earlier than that write plus the old window, so this is
// exact when the old window is longer than the refresh interval plus the two passes.
func (p *Policies) PutPolicy(ctx context.Context, pol domain.Policy) (bool, error) {
	pol = pol.WithDefaults()
	grow := time.Duration(0)
	rec, err := p.c.Do(ctx, p.c.B().Hget().Key(p.hash).Field(pol.Name).Build()).ToString()
	if err != nil && !rueidis.IsRedisNil(err) {
		return false, fmt.Errorf("redis put policy: %w", err)
	}
	if old, derr := decodePolicy(pol.Name, rec); err == nil && derr == nil && pol.Window > old.Window {
		grow = pol.Window - old.Window
		if err := p.s.extendTTLs(ctx, pol.Name, grow); err != nil {
			return false, fmt.Errorf("redis put policy: extending the keys' expiry for the grown window: %w", err)
		}
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	args := append([]string{"put", pol.Name}, encodePolicy(pol)...)
	v, err := policyScript.Exec(ctx, p.c, []string{p.hash, p.version, p.gens, p.channel}, args).AsIntSlice()
	if err != nil {
		return false, fmt.Errorf("redis put policy: %w", err)
	}
	pol.Source, pol.Floor, pol.Generation = domain.SourceAPI, v[1], v[2]
	p.apply(v[3], func(m map[string]domain.Policy) { m[pol.Name] = pol })
	if grow > 0 {
		p.done.Add(1)
		go func() {
			defer p.done.Done()
			select {
			case <-time.After(p.every + p.timeout): // every replica has the new window by then
			case <-p.closed:
				return
			}
			_ = p.s.extendTTLs(context.Background(), pol.Name, grow)
		}()
	}
	return v[0] == 1, nil
}

// DeletePolicy implements domain.PolicyStore. The policy's keys are dropped by the caller (DropPolicy); until
// then its generation keeps them from counting for a later policy of the same name.
func (p *Policies) DeletePolicy(ctx context.Context, name string) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	v, err := policyScript.Exec(ctx, p.c, []string{p.hash, p.version, p.gens, p.channel}, []string{"del", name}).AsIntSlice()
	if err != nil {
		return fmt.Errorf("redis delete policy: %w", err)
	}
	if v[0] == 0 {
		return domain.ErrPolicyNotFound
	}
	p.apply(v[3], func(m map[string]domain.Policy) { delete(m, name) })
	return nil
}

// apply installs this replica's own change at once, unless a newer copy is already held.
func (p *Policies) apply(version int64, f func(map[string]domain.Policy)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.loaded && version == p.seen+1 {
		m := make(map[string]domain.Policy, len(p.m)+1)
		for k, v := range p.m {
			m[k] = v
		}
		f(m)
		p.m, p.seen = m, version
		return
	}
	select { // otherwise reload: other changes happened meanwhile
	case p.changed <- struct{}{}:
	default:
	}
}

// Loaded implements domain.PolicyLoader: nil once the first load of the API policies succeeded.
func (p *Policies) Loaded(context.Context) error {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if !p.loaded {
		return errPoliciesNotLoaded
	}
	return nil
}
