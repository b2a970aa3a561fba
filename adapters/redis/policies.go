package redis

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
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

//go:embed copy.lua
var copySource string

var copyScript = rueidis.NewLuaScript(copySource)

// centralScript reads the version counter (KEYS[2]) and the records of the names in ARGV from the policies hash
// (KEYS[1], "" for none), in one call on the policies' slot.
var centralScript = rueidis.NewLuaScript(`local out = { redis.call('GET', KEYS[2]) or '0' }
for i = 1, #ARGV do out[#out + 1] = redis.call('HGET', KEYS[1], ARGV[i]) or '' end
return out`)

// RegisterConfigPolicies records this replica's config-file policies in Redis (config.lua) and keeps the floor of
// each: a policy whose window or algorithm differs from what the store last saw (the file changed across a
// redeploy) gets the floor domain.NextFloor gives at that instant, so units that had stopped counting never count
// again; a grown window also extends the expiry of the policy's keys (see Policies.PutPolicy). Checks of config
// policies (BucketRequest.Stored false) then decide with that floor, which never goes down: Policies registers the
// same policies again when Redis lost its data, and config.lua keeps the higher of the floor it holds and this
// replica's. It returns the names whose window or algorithm changed.
func (s *Store) RegisterConfigPolicies(ctx context.Context, ps []domain.Policy) ([]string, error) {
	s.configMu.Lock()
	s.configPols = slices.Clone(ps)
	s.configMu.Unlock()
	var changed []string
	key := "{sluice-policies}" + s.prefix + "config"
	for _, p := range ps {
		p = p.WithDefaults()
		var held int64
		if f, ok := s.configFloors.Load(p.Name); ok {
			held = f.(int64)
		}
		cctx, cancel := context.WithTimeout(ctx, s.timeout)
		v, err := configScript.Exec(cctx, s.c, []string{key}, []string{p.Name, strconv.FormatInt(p.Window.Milliseconds(), 10), string(p.Algorithm), s.now(), strconv.FormatInt(held, 10)}).AsIntSlice()
		cancel()
		if err != nil {
			return changed, fmt.Errorf("redis register config policy %s: %w", p.Name, err)
		}
		s.configFloors.Store(p.Name, max(held, v[0]))
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
// version counter, a generation counter and an epoch beside it in the same slot, changed only by policy.lua
// (atomic). Every record carries its revision: the version counter's value at its last change.
//
// Every replica holds a copy in memory (a domain.PolicyCache in its versioned mode, the one cache implementation
// of the shared stores), for listing and for what a check needs before its round trip (the failure_mode, the
// response's fields), refreshed by invalidation messages (pub/sub on the channel beside the
// hash) and at the latest every Options.Refresh (default 1s). The copy does not decide: every check of an API
// policy (BucketRequest.Stored) is sent with the copy's revision of its policy, and decide.lua compares it with the
// record in Redis before deciding anything; a stale copy is corrected from Redis's records and the check sent
// again (Store.runGroup). On a single Redis the script reads the policies hash itself; on a cluster, where a
// script sees only its keys' slot, it reads that slot's copy of the records: PutPolicy writes the record into
// every one of the 16384 slots, DeletePolicy removes it from every slot (copy.lua, pipelined, each applied only
// if newer), before they return. A slot copy behind the policies hash (a write that failed half way, a master that
// lost data or a replica promoted with a lag) is repaired from it by the first check that finds a revision other
// than its own there, or none. One window remains: a change's copy delayed past a later deletion's (concurrent
// changes of one policy through two replicas, pipelines interleaving) can put the older record back in a slot,
// where a replica still holding that revision decides with it until its copy moves (an invalidation message,
// milliseconds; at most Options.Refresh) and its next check repairs the slot.
//
// Data loss: the epoch is a random id set when missing (policy.lua), and the version and generation counters are
// then raised to the Redis clock in µs, so no revision or generation repeats one given before a loss. A replica
// that finds the epoch missing or changed logs it (Warn), counts it (Store.PolicyEpochChanges), forgets the
// version it had seen, registers its config policies' floors again, and, when it is the one that made the new
// epoch, puts back the API policies it holds (policy.lua "restore": only names Redis no longer holds). Until then
// a check of a lost API policy is answered as not found.
type Policies struct {
	s        *Store
	every    time.Duration // the refresh interval
	c        rueidis.Client
	hash     string // the policies hash
	version  string
	gens     string
	channel  string
	epochKey string
	timeout  time.Duration

	// cache is the copy of the API policies (the domain's one implementation), at the version counter's value it
	// was read at; each policy's Revision is its record's.
	cache   *domain.PolicyCache
	mu      sync.Mutex
	epoch   string // the epoch the copy was read in ("" before the first read); mu guards it
	changed chan struct{}

	stop   context.CancelFunc
	closed <-chan struct{}
	done   sync.WaitGroup
}

var _ domain.PolicyStore = (*Policies)(nil)
var _ domain.CheckPolicyGetter = (*Policies)(nil)

// PolicyOptions configure Policies.
type PolicyOptions struct {
	// Refresh is the longest a change takes to reach this replica's copy (what listings and failure modes read)
	// when its invalidation message is lost, and how often the epoch is checked; ≤ 0 means 1s. Decisions do not
	// wait for it: they are checked against Redis's records.
	Refresh time.Duration
}

// NewPolicies returns the policy store of s's Redis (with s's prefix) and starts its refresher; Close stops it.
// From then on s sends API policies' checks (BucketRequest.Stored) with this copy's rules and revisions.
func (s *Store) NewPolicies(o PolicyOptions) *Policies {
	if o.Refresh <= 0 {
		o.Refresh = time.Second
	}
	base := "{sluice-policies}" + s.prefix
	p := &Policies{
		s: s, every: o.Refresh,
		c: s.c, hash: base + "policies", version: base + "version", gens: base + "generations",
		channel: base + "changes", epochKey: base + "epoch", timeout: s.timeout,
		cache: domain.NewPolicyCache(errPoliciesNotLoaded), changed: make(chan struct{}, 1),
	}
	s.pol.Store(p)
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

// slotTags holds, per cluster hash slot, a short string whose slot it is, found once (slotTagsOnce).
var (
	slotTags     [16384]string
	slotTagsOnce sync.Once
)

func slotTag(slot uint16) string {
	slotTagsOnce.Do(func() {
		found := 0
		for i := 0; found < len(slotTags); i++ {
			t := strconv.FormatInt(int64(i), 36)
			if sl := Slot(t); slotTags[sl] == "" {
				slotTags[sl] = t
				found++
			}
		}
	})
	return slotTags[slot]
}

// recordsKey is the hash decide.lua checks a stored check of the given slot against: the policies hash on a
// single Redis, the slot's copy of it on a cluster.
func (p *Policies) recordsKey(slot uint16) string {
	if !p.s.cluster {
		return p.hash
	}
	return p.copyKey(slot)
}

func (p *Policies) copyKey(slot uint16) string {
	return "{" + slotTag(slot) + "}" + p.s.prefix + "policies"
}

// writeCopies applies records (copy.lua's triples: name, revision, record or "-|<revision>" for a deletion) to
// every slot's copy, on a cluster, in one pipeline.
func (p *Policies) writeCopies(ctx context.Context, triples []string) error {
	if !p.s.cluster || len(triples) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, max(10*time.Second, 4*p.timeout))
	defer cancel()
	execs := make([]rueidis.LuaExec, len(slotTags))
	for i := range execs {
		execs[i] = rueidis.LuaExec{Keys: []string{p.copyKey(uint16(i))}, Args: triples}
	}
	for _, r := range copyScript.ExecMulti(ctx, p.c, execs...) {
		if err := r.Error(); err != nil {
			return fmt.Errorf("writing the policy into every slot's copy: %w", err)
		}
	}
	return nil
}

// subscribe turns invalidation messages into immediate reloads, reconnecting until ctx ends.
func (p *Policies) subscribe(ctx context.Context) {
	for ctx.Err() == nil {
		_ = p.c.Receive(ctx, p.c.B().Subscribe().Channel(p.channel).Build(), func(rueidis.PubSubMessage) {
			p.poke()
		})
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond): // reconnect pacing after a lost subscription
		}
	}
}

// poke asks the refresher for a reload.
func (p *Policies) poke() {
	select {
	case p.changed <- struct{}{}:
	default:
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

// newEpoch is a fresh random epoch id, used by policy.lua only when the epoch is missing.
func newEpoch() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// policyCall runs policy.lua with op and its arguments and notes the epoch it answered.
func (p *Policies) policyCall(ctx context.Context, op string, args ...string) (done, floor, gen, rev int64, rec string, err error) {
	cctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	v, err := policyScript.Exec(cctx, p.c, []string{p.hash, p.version, p.gens, p.channel, p.epochKey}, append([]string{op, newEpoch()}, args...)).ToArray()
	if err == nil && len(v) != 7 {
		err = fmt.Errorf("%d values from policy.lua, want 7", len(v))
	}
	if err != nil {
		return 0, 0, 0, 0, "", err
	}
	n := make([]int64, 4)
	for i := range n {
		if n[i], err = v[i].AsInt64(); err != nil {
			return 0, 0, 0, 0, "", err
		}
	}
	epoch, _ := v[4].ToString()
	made, _ := v[5].AsInt64()
	rec, _ = v[6].ToString()
	p.noteEpoch(ctx, epoch, made == 1)
	return n[0], n[1], n[2], n[3], rec, nil
}

// noteEpoch handles the epoch read from Redis: a missing or changed one means Redis lost its data.
func (p *Policies) noteEpoch(ctx context.Context, epoch string, made bool) {
	_, loaded := p.cache.Version()
	p.mu.Lock()
	old := p.epoch
	p.epoch = epoch
	lost := old != epoch && (old != "" || made && loaded)
	p.mu.Unlock()
	var held []domain.Policy
	if lost {
		held = p.cache.ForgetVersion() // the version counter restarted from the Redis clock
	}
	if !lost {
		return
	}
	p.s.epochChanges.Add(1)
	p.s.log.Warn("redis: the API policies' epoch is missing or changed: Redis lost its data (restart without persistence, FLUSHALL, failover to a replica that lagged); registering config floors again",
		"old_epoch", old, "epoch", epoch, "restoring_api_policies", made, "held", len(held))
	p.s.configMu.Lock()
	cfg := p.s.configPols
	p.s.configMu.Unlock()
	if len(cfg) > 0 {
		if _, err := p.s.RegisterConfigPolicies(ctx, cfg); err != nil {
			p.s.log.Warn("redis: registering config policies after the loss failed; retried at the next refresh", "err", err)
		}
	}
	if made {
		var triples []string
		for _, pol := range held {
			shadow := "0"
			if pol.Shadow {
				shadow = "1"
			}
			done, _, _, rev, rec, err := p.policyCall(ctx, "restore", append(append([]string{pol.Name}, encodePolicy(pol)[:5]...), shadow,
				strconv.FormatInt(pol.Floor, 10), strconv.FormatInt(pol.Generation, 10))...)
			if err != nil {
				p.s.log.Warn("redis: restoring an API policy after the loss failed", "policy", pol.Name, "err", err)
				continue
			}
			if done == 1 {
				triples = append(triples, pol.Name, strconv.FormatInt(rev, 10), rec)
			}
		}
		if err := p.writeCopies(ctx, triples); err != nil {
			p.s.log.Warn("redis: restoring the slot copies after the loss failed; checks repair them", "err", err)
		}
	}
	p.poke()
}

// reload reads the version and the epoch and, when the version moved (or force), the whole hash.
func (p *Policies) reload(ctx context.Context, force bool) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout+time.Second)
	defer cancel()
	vs, err := p.c.Do(ctx, p.c.B().Mget().Key(p.version, p.epochKey).Build()).ToArray()
	if err != nil {
		return err
	}
	v, _ := vs[0].AsInt64() // nil: 0
	epoch, _ := vs[1].ToString()
	if epoch == "" {
		if _, _, _, _, _, err := p.policyCall(ctx, "epoch"); err != nil {
			return err
		}
		return p.reload(ctx, true)
	}
	p.noteEpoch(ctx, epoch, false)
	if seen, loaded := p.cache.Version(); loaded && seen == v && !force {
		return nil
	}
	// The hash and the version are read in one script-free MULTI-less pair; a change between them is caught by
	// the next reload (the version read first can only be older than the hash read after it).
	kv, err := p.c.Do(ctx, p.c.B().Hgetall().Key(p.hash).Build()).AsStrMap()
	if err != nil {
		return err
	}
	ps := make([]domain.Policy, 0, len(kv))
	for name, rec := range kv {
		pol, err := decodePolicy(name, rec)
		if err != nil {
			return err
		}
		ps = append(ps, pol)
	}
	p.cache.InstallVersion(ps, v)
	return nil
}

// record: limit|window_ms|algorithm|resolution_ms|failure_mode|shadow|floor (µs)|generation|revision
func encodePolicy(pol domain.Policy) []string {
	shadow := "0"
	if pol.Shadow {
		shadow = "1"
	}
	return []string{strconv.FormatInt(pol.Limit, 10), strconv.FormatInt(pol.Window.Milliseconds(), 10),
		string(pol.Algorithm), strconv.FormatInt(pol.Resolution.Milliseconds(), 10), string(pol.FailureMode), shadow}
}

// decodePolicy reads a record, its revision in Policy.Revision (0 for a record of eight fields, written before
// records carried one; decide.lua reads it alike).
func decodePolicy(name, rec string) (domain.Policy, error) {
	f := strings.Split(rec, "|")
	if len(f) != 8 && len(f) != 9 {
		return domain.Policy{}, fmt.Errorf("redis: policy %q: malformed record %q", name, rec)
	}
	n := make([]int64, 9)
	for _, i := range []int{0, 1, 3, 6, 7, 8} {
		if i >= len(f) {
			continue
		}
		v, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return domain.Policy{}, fmt.Errorf("redis: policy %q: field %d of %q: %w", name, i, rec, err)
		}
		n[i] = v
	}
	return domain.Policy{
		Name: name, Limit: n[0], Window: time.Duration(n[1]) * time.Millisecond, Algorithm: domain.Algorithm(f[2]),
		Resolution: time.Duration(n[3]) * time.Millisecond, FailureMode: domain.FailureMode(f[4]), Shadow: f[5] == "1",
		Source: domain.SourceAPI, Floor: n[6], Generation: n[7], Revision: n[8],
	}, nil
}

// recordRevision is the revision of a record or of a deleted policy's "-|<revision>".
func recordRevision(rec string) int64 {
	if v, ok := strings.CutPrefix(rec, "-|"); ok {
		n, _ := strconv.ParseInt(v, 10, 64)
		return n
	}
	pol, _ := decodePolicy("", rec)
	return pol.Revision
}

// held returns the copy's policy of name (its Revision is the record's).
func (p *Policies) held(name string) (domain.Policy, bool) { return p.cache.Held(name) }

// resolve corrects the copy from the records decide.lua answered stale (name, record pairs; "" none, "-|<rev>" a
// deleted policy), read from recordsKey. On a cluster the policies hash is the truth: the records are read from
// it, and a slot copy that differs from it is rewritten (copy.lua: only when older) before the check is sent again.
func (p *Policies) resolve(ctx context.Context, recordsKey string, stale []string) error {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	if p.s.cluster {
		names := make([]string, 0, len(stale)/2)
		for k := 0; k < len(stale); k += 2 {
			names = append(names, stale[k])
		}
		truth, err := centralScript.Exec(ctx, p.c, []string{p.hash, p.version}, names).AsStrSlice()
		if err != nil {
			return fmt.Errorf("reading the policies for a stale slot copy: %w", err)
		}
		var repair []string
		for k, name := range names {
			rec := truth[1+k]
			if rec == "" {
				rec = "-|" + truth[0] // deleted (or never made) by the current version
			}
			if rec != stale[2*k+1] && stale[2*k+1] != "" || truth[1+k] != "" && stale[2*k+1] == "" {
				// The slot holds another record, or none while the hash holds one: rewrite it. (None in either
				// place, a name never made or deleted, needs nothing: a check of it finds no record.)
				repair = append(repair, name, strconv.FormatInt(recordRevision(rec), 10), rec)
			}
			stale[2*k+1] = rec
		}
		if len(repair) > 0 {
			if err := copyScript.Exec(ctx, p.c, []string{recordsKey}, repair).Error(); err != nil {
				return fmt.Errorf("repairing a slot's policy copy: %w", err)
			}
		}
	}
	for k := 0; k < len(stale); k += 2 {
		p.install(stale[k], stale[k+1])
	}
	return nil
}

// install puts Redis's record of name into the copy ("" or "-|<rev>": no such policy).
func (p *Policies) install(name, rec string) {
	if rec == "" || strings.HasPrefix(rec, "-|") {
		p.cache.Offer(name, nil)
		return
	}
	pol, err := decodePolicy(name, rec)
	if err != nil {
		p.s.log.Warn("redis: unreadable policy record", "policy", name, "err", err)
		return
	}
	p.cache.Offer(name, &pol)
}

// ListPolicies implements domain.PolicyStore, sorted by name: it reloads first (an admin call, not a check).
func (p *Policies) ListPolicies(ctx context.Context) ([]domain.Policy, error) {
	if err := p.reload(ctx, true); err != nil {
		return nil, fmt.Errorf("redis list policies: %w", err)
	}
	return p.cache.List()
}

var errPoliciesNotLoaded = errors.New("redis: API policies not loaded yet (Redis unreachable)")

// GetPolicy implements domain.PolicyStore from the copy: no round trip.
func (p *Policies) GetPolicy(_ context.Context, name string) (domain.Policy, error) {
	return p.cache.Get(name)
}

// CheckPolicy implements domain.CheckPolicyGetter: the copy's policy, or, for a name the copy does not hold, a
// provisional one (failure_mode deny, the largest limit so the cost is judged by Redis's record) that the store
// replaces with the policy in force, answering StatusPolicyNotFound when there is none. So a policy created
// through another replica binds here at the next check.
func (p *Policies) CheckPolicy(_ context.Context, name string) (domain.Policy, error) {
	return p.cache.CheckPolicy(name), nil
}

// PutPolicy implements domain.PolicyStore. policy.lua keeps the generation of an existing policy, gives a new one
// a generation never used before (so a deleted policy's keys never count for it), and on a change of window or
// algorithm raises the floor as domain.NextFloor does, at the change instant on the Redis clock: units that had
// stopped counting never come back when the window grows. On a cluster the record is written into every slot's
// copy before PutPolicy returns, so every replica's next check of the policy, in any slot, decides with it.
//
// When the window grows, the keys' expiries (set for the old window) are first extended by the growth, so a key
// that sees no decision before its old expiry keeps the units the longer window still counts; once the change is
// made, a second pass after the refresh interval extends the keys written meanwhile. A check decides with the new
// window as soon as PutPolicy returns, and a check that does not write extends its key's expiry for the grown
// window itself (decide.lua), so the second pass only covers writes that raced the change.
func (p *Policies) PutPolicy(ctx context.Context, pol domain.Policy) (bool, error) {
	if pol.Period != nil { // not decided by this store yet: a validation problem naming period
		return false, domain.Invalid("period", "calendar periods are not decided by the redis store yet (the memory store decides them)")
	}
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
	created, floor, gen, rev, rec, err := p.policyCall(ctx, "put", append([]string{pol.Name}, encodePolicy(pol)...)...)
	if err != nil {
		return false, fmt.Errorf("redis put policy: %w", err)
	}
	if err := p.writeCopies(ctx, []string{pol.Name, strconv.FormatInt(rev, 10), rec}); err != nil {
		return false, fmt.Errorf("redis put policy %s (made in the policies hash; checks in the slots not reached repair them): %w", pol.Name, err)
	}
	pol.Source, pol.Floor, pol.Generation, pol.Revision = domain.SourceAPI, floor, gen, rev
	if !p.cache.ApplyVersion(rev, pol.Name, &pol) {
		p.poke() // other changes happened meanwhile: reload
	}
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
	return created == 1, nil
}

// DeletePolicy implements domain.PolicyStore. The policy's keys are dropped by the caller (DropPolicy); until
// then its generation keeps them from counting for a later policy of the same name. On a cluster the record is
// removed from every slot's copy (where its revision is older than the deletion's) before DeletePolicy returns.
func (p *Policies) DeletePolicy(ctx context.Context, name string) error {
	deleted, _, _, rev, _, err := p.policyCall(ctx, "del", name)
	if err != nil {
		return fmt.Errorf("redis delete policy: %w", err)
	}
	if deleted == 0 {
		return domain.ErrPolicyNotFound
	}
	r := strconv.FormatInt(rev, 10)
	if err := p.writeCopies(ctx, []string{name, r, "-|" + r}); err != nil {
		return fmt.Errorf("redis delete policy %s (deleted from the policies hash; checks in the slots not reached repair them): %w", name, err)
	}
	if !p.cache.ApplyVersion(rev, name, nil) {
		p.poke() // other changes happened meanwhile: reload
	}
	return nil
}

// Loaded implements domain.PolicyLoader: nil once the first load of the API policies succeeded.
func (p *Policies) Loaded(ctx context.Context) error { return p.cache.Loaded(ctx) }
