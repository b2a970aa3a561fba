// Package redis is the Redis BucketStore: any number of sluice replicas share one Redis, a Redis Cluster or a
// Sentinel-managed Redis, and together never admit more than a policy's limit per key (up to what an
// asynchronous failover loses: docs/reliability.md).
//
// Every decision is one round trip: one EVALSHA of decide.lua (its core, with one file per algorithm in algo/
// spliced in at init: buildDecide), which reads the key's value, decides with the
// Redis server's clock (TIME, microseconds), so sluice replicas whose clocks disagree still enforce one cap, and
// writes only when it admits: a peek or a denial writes nothing. Each (policy, key) is one Redis key:
//
//	{<16 hex digits of FNV-1a 64 of the key>}<prefix><len(policy)>:<policy>:<key bytes>
//
// The hash tag is a digest of the key alone, so it never contains a brace whatever the key holds, and the checks
// of one key under several policies (a burst and a daily limit, the common multi-check) share a slot and are
// decided by one script. The policy's length prefix keeps (policy, key) pairs apart however they are spelt.
// Keys expire (PX) when nothing in them can count any more.
//
// decide.lua is domain.Bucket.Decide step for step (microseconds, the same integer rounding) and converts state
// as the conversion spec of issue 22 says (units that still count are kept, a token bucket's under the limit and
// window that wrote them; only a check that admits writes; an algorithm outside the table is
// domain.StatusInvalidRule), so this store's decisions are the domain's to every field: domain/storetest's model
// test compares them on random sequences (TestConversionSpecExamples holds the spec's worked examples here). All arithmetic in the script is on integers
// below 2^53, which Lua's doubles hold exactly; the token bucket's emission time (a 106-bit product) is computed
// here in Go and passed in, and its remaining units and rounded-up durations are finished here from the script's
// exact parts, with math/bits as in domain/tokenbucket.go.
//
// The script is sent once per node (EVALSHA; on NOSCRIPT, after a restart or a failover to a node that never saw
// it, the client sends it in full with EVAL and the node caches it again).
//
// Policies: a check of an API policy (BucketRequest.Stored, once NewPolicies gave this store its policy copy) is
// decided with the policy in force in Redis at that decision, in the same round trip: it is sent with the copy's
// rule and the copy's revision of the policy, and decide.lua compares the revision with the policy's record
// before it decides or writes anything (the policies hash on a single Redis; on a cluster the record's copy in
// the checked key's slot, which PutPolicy and DeletePolicy write into all 16384 slots before they return). A stale
// copy costs one more round trip per missed change (runGroup); a deleted policy answers StatusPolicyNotFound, a
// cost above the limit in force StatusCostOverLimit, as on Postgres. Tests: TestPolicyChangeBindsAtNextDecision,
// TestStoredCheckStatuses, TestPolicyChangesAfterDataLoss (Redis losing its data: see Policies). Config-file
// policies decide with the rule they carry and the floor RegisterConfigPolicies keeps for them.
//
// Holds (shared/design.md, "Holds"; Store.Hold, Store.ApplyBatch): an acquire, settle, renewal or anonymous release
// is decide.lua's holdop, run by a script call in mode "b" on the key's slot (one op, or a batch of checks and hold
// ops: ApplyBatch), with the Redis clock, which is domain.Bucket.ApplyHold step for step on every algorithm,
// concurrency included (algo/5_concurrency.lua). The hold records are stored in the key's
// value after its state, so a check and a hold op of the key are each one atomic step, Reset and DropPolicy drop
// them with the key, and its expiry (PX) is the later of its state's and its records' (a crashed holder's
// concurrency units stop counting at the hold's deadline; the record lives as long as Bucket.Empty keeps it).
// Tests: the conformance suite's hold and batch tests, TestHoldsModelWithPolicyChanges and FuzzHolds against
// domain.Bucket, TestConcurrencyAcrossClients, TestConcurrencyHoldExpiry.
//
// On a single Redis, `sluice serve` puts the coalescer's lanes in front of this store (app/redis.go, redis.lanes):
// the checks of several keys that arrive while a lane's call is in flight are one non-atomic DecideBatch, so one
// script call, and when hold ops arrive among them the lane's batch is one ApplyBatch, again one script call. A
// cluster is not laned (one call holds one slot's keys).
//
// Multi-checks whose keys share a slot (any multi-check on a single Redis) are one script call, atomic as any
// script. Atomic multi-checks across slots of a cluster are reserved slot by slot, in slot order, and the
// reservations are undone when one is refused: see DecideBatch for what that costs.
//
// The client is rueidis (github.com/redis/rueidis), chosen by measurement (client_bench_test.go, one EVALSHA
// decision loop on the same local Redis, both clients in one run, 2 busy cores): rueidis 19.9-20.3 µs/op, go-redis
// v9 27.6-28.9 µs/op, about 1.4× the throughput, from its automatic pipelining of concurrent calls onto few
// connections. It also finds out by itself whether its seeds are a cluster (one seed is enough), follows
// MOVED/ASK and topology changes, speaks Sentinel, and its Lua helper does the EVALSHA/NOSCRIPT fallback.
package redis

import (
	"context"
	"crypto/sha1"
	"crypto/tls"
	"embed"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math"
	"math/bits"
	"net"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/rueidis"

	"github.com/sluice-dev/sluice/domain"
)

// decideCore is the decision script's core; decideSource, the script sent, is the core with the sections of the
// algorithm files (algo/<code>_<name>.lua: one per algorithm) spliced in at its "--@" markers (buildDecide).
//
//go:embed decide.lua
var decideCore string

//go:embed algo/*.lua
var algoFiles embed.FS

var decideSource, algoCode = buildDecide()

// markerRE finds a splice marker in the core, or a section's start in an algorithm file.
var markerRE = regexp.MustCompile(`--@(\w+)`)

// buildDecide splices the algorithm files into the core: at each marker, the files' sections of that name as one
// if/elseif chain on the algorithm code (one function body, no dispatch table built per call: the script runs
// whole on every call). It returns the script and the algorithm codes (a file's name is its code and the
// domain.Algorithm it decides). A file without a step, units, into or expiry section panics at init.
func buildDecide() (string, map[domain.Algorithm]byte) {
	type algo struct {
		code byte
		sec  map[string]string
	}
	es, err := algoFiles.ReadDir("algo")
	if err != nil {
		panic(err)
	}
	var as []algo
	codes := map[domain.Algorithm]byte{}
	for _, e := range es {
		num, name, ok := strings.Cut(strings.TrimSuffix(e.Name(), ".lua"), "_")
		code, err := strconv.ParseUint(num, 10, 8)
		if !ok || err != nil || code == 0 {
			panic("redis: algorithm file " + e.Name() + " is not named <code>_<algorithm>.lua")
		}
		src, err := algoFiles.ReadFile("algo/" + e.Name())
		if err != nil {
			panic(err)
		}
		a := algo{code: byte(code), sec: map[string]string{}}
		cur := ""
		for _, line := range strings.SplitAfter(string(src), "\n") {
			if m := markerRE.FindStringSubmatch(line); m != nil && strings.HasPrefix(line, "--@") {
				cur = m[1]
				continue
			}
			if cur != "" {
				a.sec[cur] += line
			}
		}
		for _, need := range []string{"step", "units", "into", "expiry"} {
			if a.sec[need] == "" {
				panic("redis: algorithm file " + e.Name() + " has no --@" + need + " section")
			}
		}
		as = append(as, a)
		codes[domain.Algorithm(name)] = a.code
	}
	sort.Slice(as, func(i, j int) bool { return as[i].code < as[j].code })
	dispatch := func(sec, on, otherwise string) string {
		var b strings.Builder
		for _, a := range as {
			body, ok := a.sec[sec]
			if !ok {
				continue
			}
			kw := "elseif"
			if b.Len() == 0 {
				kw = "if"
			}
			fmt.Fprintf(&b, "%s %s == %d then\n%s", kw, on, a.code, body)
		}
		if otherwise != "" {
			b.WriteString("else\n" + otherwise + "\n")
		}
		return b.String() + "end"
	}
	var helpers, known, retune strings.Builder
	known.WriteString("local function known(a) return ")
	retune.WriteString("(false")
	for i, a := range as {
		helpers.WriteString(a.sec["helpers"])
		if i > 0 {
			known.WriteString(" or ")
		}
		fmt.Fprintf(&known, "a == %d", a.code)
		if e := strings.TrimSpace(a.sec["retune"]); e != "" {
			fmt.Fprintf(&retune, " or (algo == %d and (%s))", a.code, e)
		}
	}
	known.WriteString(" end\n")
	retune.WriteString(")")
	gen := map[string]string{
		"helpers": known.String() + helpers.String(),
		"units":   dispatch("units", "st.alg", ""),
		"into":    dispatch("into", "algo", ""),
		"step":    dispatch("step", "algo", "return INVALID"),
		"expiry":  dispatch("expiry", "st.alg", "return 0"),
		"undo":    dispatch("undo", "algo", ""),
		"retune":  retune.String(),
	}
	src := markerRE.ReplaceAllStringFunc(decideCore, func(m string) string {
		g, ok := gen[m[3:]]
		if !ok {
			panic("redis: decide.lua has an unknown marker " + m)
		}
		return g
	})
	return src, codes
}

var (
	decideScript = rueidis.NewLuaScript(decideSource)
	decideSha    = func() string { h := sha1.Sum([]byte(decideSource)); return hex.EncodeToString(h[:]) }()
)

// Options configure a Store.
type Options struct {
	// Addrs are host:port seeds: one Redis, any nodes of a cluster (the client asks them whether they are one), or
	// Sentinels when MasterSet is set.
	Addrs []string
	// MasterSet names the Sentinel master set; empty means no Sentinel.
	MasterSet string
	Username  string
	Password  string
	// TLS, when not nil, is the TLS configuration of every connection (nil: plain TCP).
	TLS *tls.Config
	// Prefix is put after the hash tag of every key, so several deployments (or tests) can share one Redis.
	Prefix string
	// Timeout bounds every call of the decision path; ≤ 0 means 250ms.
	Timeout time.Duration
	// WaitReplicas, when > 0, makes every decision that recorded units wait (Redis WAIT) until that many replicas
	// of its master acknowledged the write, at most WaitTimeout (≤ 0 means Timeout). A decision whose write was
	// not acknowledged in time is still answered as decided (the units are recorded on the master); WAIT narrows
	// what a failover can lose, it does not make replication synchronous (docs/reliability.md has the figures).
	WaitReplicas int
	WaitTimeout  time.Duration
	// Clock is test-only: nil (production) means the Redis server's clock decides. With a clock, every script is
	// given its instant instead, so tests can move time without sleeping.
	Clock domain.Clock
	// ExpirySlack is test-only, with Clock: every key expires this much later than the clock says. Redis expires
	// keys in real time while a test clock stands still between its jumps, so a key with a millisecond left on
	// the test clock can vanish before the next check of a long-running test (a fuzz program). Zero keeps the
	// exact expiry, which the TTL tests check.
	ExpirySlack time.Duration
	// Logger receives the store's own log lines; nil discards them.
	Logger *slog.Logger
}

// Store implements domain.BucketStore on Redis. Safe for concurrent use.
type Store struct {
	c       rueidis.Client
	cluster bool
	prefix  string
	timeout time.Duration
	wait    int
	waitFor time.Duration
	clock   domain.Clock
	slack   time.Duration
	log     *slog.Logger
	closeMu sync.Once
	// configFloors: config policy name → floor (µs), set by RegisterConfigPolicies.
	configFloors sync.Map
	// configPols: the config policies last registered, registered again when Redis lost its data.
	configMu   sync.Mutex
	configPols []domain.Policy
	// waitTimeouts counts writes whose WAIT returned fewer acknowledgements than WaitReplicas.
	waitTimeouts atomic.Int64
	// RecheckEviction's findings: the sum of the nodes' evicted_keys, whether it ran once, and the problem of a
	// node that may evict (nil when every node is noeviction).
	evicted         atomic.Int64
	evictionChecked atomic.Bool
	evictionProblem atomic.Pointer[error]
	// epochChanges counts the times the policies' epoch was found missing or changed (Redis lost its data).
	epochChanges atomic.Int64
	// pol is the replica's policy copy (NewPolicies): stored checks are sent with its rules and revisions.
	pol atomic.Pointer[Policies]
}

// PolicyEpochChanges counts the times this replica found the API policies' epoch missing or changed: Redis lost
// its data (a restart without persistence, FLUSHALL, a failover to a replica that lagged). app/redis.go exports
// it as sluice_redis_policy_epoch_changes_total.
func (s *Store) PolicyEpochChanges() int64 { return s.epochChanges.Load() }

// WaitTimeouts counts the decisions whose write was not acknowledged by WaitReplicas replicas in time.
func (s *Store) WaitTimeouts() int64 { return s.waitTimeouts.Load() }

var _ domain.BucketStore = (*Store)(nil)

// Open connects to the seeds and checks that the server cannot evict a key (maxmemory-policy noeviction): an
// evicted key is a reset counter, which over-admits.
func Open(ctx context.Context, o Options) (*Store, error) {
	if len(o.Addrs) == 0 {
		return nil, errors.New("redis: no address given (redis.addrs / SLUICE_REDIS_ADDRS)")
	}
	if o.Timeout <= 0 {
		o.Timeout = 250 * time.Millisecond
	}
	if o.WaitTimeout <= 0 {
		o.WaitTimeout = o.Timeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	opt := rueidis.ClientOption{
		InitAddress:  o.Addrs,
		Username:     o.Username,
		Password:     o.Password,
		ShuffleInit:  true,
		DisableCache: true,
		Dialer:       net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		// A topology change (failover, resharding) is followed on MOVED/ASK at once; the periodic refresh also
		// catches a promoted replica before the first redirect.
		ClusterOption: rueidis.ClusterOption{ShardsRefreshInterval: 5 * time.Second},
	}
	if o.TLS != nil {
		opt.TLSConfig = o.TLS
	}
	if o.MasterSet != "" {
		opt.Sentinel = rueidis.SentinelOption{MasterSet: o.MasterSet, Username: o.Username, Password: o.Password}
	}
	c, err := rueidis.NewClient(opt)
	if err != nil {
		return nil, fmt.Errorf("redis: connect to %s: %w", strings.Join(o.Addrs, ","), err)
	}
	s := &Store{
		c: c, cluster: c.Mode() == rueidis.ClientModeCluster, prefix: o.Prefix, timeout: o.Timeout,
		wait: o.WaitReplicas, waitFor: o.WaitTimeout, clock: o.Clock, slack: o.ExpirySlack, log: o.Logger,
	}
	if err := s.checkEviction(ctx); err != nil {
		c.Close()
		return nil, err
	}
	return s, nil
}

// Close closes the client's connections.
func (s *Store) Close() { s.closeMu.Do(s.c.Close) }

// Cluster reports whether the seeds are a Redis Cluster.
func (s *Store) Cluster() bool { return s.cluster }

// Client exposes the client, for tests and the policy store.
func (s *Store) Client() rueidis.Client { return s.c }

// checkEviction refuses a server that may evict keys (at start-up; RecheckEviction watches it afterwards).
func (s *Store) checkEviction(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	for addr, n := range s.c.Nodes() {
		kv, err := n.Do(ctx, n.B().ConfigGet().Parameter("maxmemory-policy").Build()).AsStrMap()
		if err != nil {
			var re *rueidis.RedisError
			if errors.As(err, &re) {
				return fmt.Errorf("redis: cannot read maxmemory-policy from %s (CONFIG GET refused: %v); sluice needs maxmemory-policy noeviction, since an evicted key is a reset counter that over-admits", addr, err)
			}
			return fmt.Errorf("redis: %s: %w", addr, err)
		}
		if p := kv["maxmemory-policy"]; p != "noeviction" {
			return fmt.Errorf("redis: %s has maxmemory-policy %q; sluice needs noeviction (an evicted key is a reset counter, which over-admits): set maxmemory-policy noeviction in redis.conf or with CONFIG SET", addr, p)
		}
	}
	return nil
}

// RecheckEviction checks again what Open checked, on every node: maxmemory-policy must be noeviction (an operator
// can change it at run time, and an evicted key is a reset counter that over-admits); and it reads each node's
// evicted_keys (INFO stats). A policy that allows eviction makes Ping fail (so /healthz/store answers 503 and a
// replica that never saw the store healthy stays unready) until it is noeviction again; both changes, and every
// rise of evicted_keys, are logged at Warn. WatchEviction calls it on an interval; its error is that of the
// check that could not run (a node unreachable), which changes nothing.
func (s *Store) RecheckEviction(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	var evicted int64
	var problem error
	for addr, n := range s.c.Nodes() {
		kv, err := n.Do(ctx, n.B().ConfigGet().Parameter("maxmemory-policy").Build()).AsStrMap()
		if err != nil {
			if _, ok := rueidis.IsRedisErr(err); !ok {
				return fmt.Errorf("redis: %s: %w", addr, err)
			}
			problem = fmt.Errorf("redis: cannot read maxmemory-policy from %s (CONFIG GET refused: %v); sluice needs noeviction", addr, err)
		} else if p := kv["maxmemory-policy"]; p != "noeviction" && problem == nil {
			problem = fmt.Errorf("redis: %s has maxmemory-policy %q at run time; sluice needs noeviction (an evicted key is a reset counter, which over-admits): CONFIG SET maxmemory-policy noeviction", addr, p)
		}
		info, err := n.Do(ctx, n.B().Info().Section("stats").Build()).ToString()
		if err != nil {
			return fmt.Errorf("redis: %s: %w", addr, err)
		}
		for line := range strings.SplitSeq(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "evicted_keys:"); ok {
				k, _ := strconv.ParseInt(v, 10, 64)
				evicted += k
			}
		}
	}
	if before := s.evicted.Swap(evicted); evicted > before && s.evictionChecked.Load() {
		s.log.Warn("redis: keys were evicted: each was a counter reset, which over-admits; set maxmemory-policy noeviction and give Redis the memory its keys need",
			"evicted_keys", evicted, "since_last_check", evicted-before)
	}
	s.evictionChecked.Store(true)
	old := s.evictionProblem.Swap(&problem)
	switch {
	case problem != nil && (old == nil || *old == nil):
		s.log.Warn("redis: the server may now evict keys; /healthz/store fails until it is noeviction again", "err", problem)
	case problem == nil && old != nil && *old != nil:
		s.log.Info("redis: maxmemory-policy is noeviction again")
	}
	return nil
}

// WatchEviction runs RecheckEviction every interval until ctx ends.
func (s *Store) WatchEviction(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := s.RecheckEviction(ctx); err != nil && ctx.Err() == nil {
				s.log.Debug("redis: eviction check could not run", "err", err)
			}
		}
	}
}

// EvictedKeys is the sum of the nodes' evicted_keys at the last RecheckEviction (Redis's own counter: it restarts
// with the server).
func (s *Store) EvictedKeys() int64 { return s.evicted.Load() }

// EvictionSafe reports whether the last RecheckEviction found every node at maxmemory-policy noeviction.
func (s *Store) EvictionSafe() bool {
	p := s.evictionProblem.Load()
	return p == nil || *p == nil
}

// Key is the Redis key of (policy, key): see the package doc.
func (s *Store) Key(policy, key string) string {
	h := fnv.New64a()
	h.Write([]byte(key))
	var b strings.Builder
	b.Grow(19 + len(s.prefix) + 4 + len(policy) + len(key))
	b.WriteByte('{')
	var hex [16]byte
	v := h.Sum64()
	for i := 15; i >= 0; i-- {
		hex[i] = "0123456789abcdef"[v&15]
		v >>= 4
	}
	b.Write(hex[:])
	b.WriteByte('}')
	b.WriteString(s.prefix)
	b.WriteString(strconv.Itoa(len(policy)))
	b.WriteByte(':')
	b.WriteString(policy)
	b.WriteByte(':')
	b.WriteString(key)
	return b.String()
}

// now is the instant argument: "" (the server's clock) unless a test clock is set.
func (s *Store) now() string {
	if s.clock == nil {
		return ""
	}
	return strconv.FormatInt(s.clock.Now().UnixMicro(), 10)
}

// instant is decide.lua's ARGV[2]: now, and with ExpirySlack "+" and the slack in milliseconds.
func (s *Store) instant() string {
	if s.clock == nil || s.slack <= 0 {
		return s.now()
	}
	return s.now() + "+" + strconv.FormatInt(s.slack.Milliseconds(), 10)
}

// checkSize is the packed size of one check but its generation's digits and its name (decide.lua's CHECK).
const checkSize = 1 + 5*8 + 1 + 2*8 + 1 + 8 + 2

// appendCheck appends r packed as decide.lua's CHECK record (its header lists the fields): the numbers as
// little-endian doubles, exact since the Limiter keeps every one below 2^53, and the generation and the policy's
// name, NUL-terminated. A config policy's check decides with the floor RegisterConfigPolicies keeps for it, when
// higher. rev ≥ -1 marks a stored check and is the revision of the replica's copy of its policy (-1: not held);
// rev < -1 an unchecked one. An algorithm outside algoCode, or a calendar period (Rule.Period, which this store
// does not decide yet), is sent as code 0, which the script answers as an invalid rule (never a silent default).
func (s *Store) appendCheck(b []byte, r domain.BucketRequest, rev int64) []byte {
	if !r.Stored {
		if f, ok := s.configFloors.Load(r.Policy); ok {
			r.Floor = max(r.Floor, f.(int64))
		}
	}
	code := algoCode[r.Algorithm]
	if r.Period != nil {
		code = 0 // a calendar period is not decided by this store yet: an invalid rule, never a window's decision
	}
	var shadow byte
	if r.Shadow {
		shadow = 1
	}
	window := r.Window.Microseconds()
	var q, rem uint64
	if r.Algorithm == domain.TokenBucket && r.Limit > 0 {
		// The emission time of max(cost, 1) units, q + rem/limit µs: a 106-bit product, so computed here.
		hi, lo := bits.Mul64(uint64(max(r.Cost, 1)), uint64(window))
		if hi < uint64(r.Limit) {
			q, rem = bits.Div64(hi, lo, uint64(r.Limit)) // cost ≤ limit keeps q ≤ window
		} else {
			q = 1<<53 - 1 // a hold's amount far over the limit (a settle's): denied whatever its exact time
		}
	}
	b = append(b, code)
	for _, v := range [...]int64{r.Limit, window, r.Resolution.Microseconds(), r.Floor, r.Cost} {
		b = appendDouble(b, v)
	}
	b = append(b, shadow)
	b = appendDouble(appendDouble(b, int64(q)), int64(rem))
	if rev >= -1 {
		b = appendDouble(append(b, 1), rev)
	} else {
		b = appendDouble(append(b, 0), 0)
	}
	b = append(strconv.AppendInt(b, r.Generation, 10), 0)
	if rev >= -1 {
		b = append(b, r.Policy...)
	}
	return append(b, 0)
}

// unchecked is appendCheck's rev for a check whose policy is not checked against Redis's records.
const unchecked = -2

// appendDouble appends v as a little-endian IEEE 754 double: exact for |v| < 2^53.
func appendDouble(b []byte, v int64) []byte {
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(float64(v)))
}

// packChecks packs the checks rs[i] for i in idx as decide.lua's ARGV[4]; revs, when not nil, holds each
// check's revision (appendCheck's rev, indexed like idx).
func (s *Store) packChecks(rs []domain.BucketRequest, idx []int, revs []int64) string {
	b := make([]byte, 0, len(idx)*(checkSize+4))
	for j, i := range idx {
		rev := int64(unchecked)
		if revs != nil {
			rev = revs[j]
		}
		b = s.appendCheck(b, rs[i], rev)
	}
	return string(b)
}

// fitUnits is how many whole units fit in a slack of d - f/limit µs: floor((d × limit - f) / window), from 0 to
// limit (domain/tokenbucket.go's rounding, toward denial).
func fitUnits(d, f, limit, window int64) int64 {
	if d < 0 {
		return 0
	}
	hi, lo := bits.Mul64(uint64(d), uint64(limit))
	lo, borrow := bits.Sub64(lo, uint64(f), 0)
	hi, borrow = bits.Sub64(hi, 0, borrow)
	if borrow != 0 {
		return 0
	}
	if hi >= uint64(window) {
		return limit
	}
	n, _ := bits.Div64(hi, lo, uint64(window))
	return min(int64(n), limit)
}

// ceilMicros rounds d + f/limit µs (f ≥ 0) up to whole microseconds.
func ceilMicros(d, f int64) time.Duration {
	if f > 0 {
		d++
	}
	return time.Duration(d) * time.Microsecond
}

// results is how many integers the script returns per check.
const results = 9

// decision turns the script's integers for r into a Decision.
func decision(r domain.BucketRequest, v []int64) domain.Decision {
	if v[0] == 3 {
		return domain.Decision{Status: domain.StatusInvalidRule, Limit: r.Limit}
	}
	d := domain.Decision{Allowed: v[0] == 1, Limit: r.Limit, Remaining: v[1],
		ResetAfter: time.Duration(v[2]) * time.Microsecond, RetryAfter: time.Duration(v[3]) * time.Microsecond}
	if r.Algorithm == domain.TokenBucket {
		// The new (or would-be) tat is now + A + NF/limit, the current one now + B + F/limit.
		A, NF, B, F := v[5], v[6], v[7], v[8]
		w := r.Window.Microseconds()
		if d.Allowed {
			d.Remaining, d.ResetAfter = fitUnits(w-A, NF, r.Limit, w), ceilMicros(A, NF)
		} else {
			d.Remaining, d.ResetAfter, d.RetryAfter = fitUnits(w-B, F, r.Limit, w), ceilMicros(B, F), ceilMicros(A-w, NF)
		}
	}
	return d
}

// exec runs the script on keys (one slot) and returns its integers, or, when it found the policy of a stored
// check stale (it then decided and wrote nothing), the names and records it answered, in pairs.
func (s *Store) exec(ctx context.Context, keys, args []string, writes bool) ([]int64, []string, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if s.wait > 0 && writes {
		return s.execWait(ctx, keys, args)
	}
	return reply(decideScript.Exec(ctx, s.c, keys, args))
}

// reply reads decide.lua's answer: integers, or "stale" and (name, record) pairs.
func reply(r rueidis.RedisResult) ([]int64, []string, error) {
	arr, err := r.ToArray()
	if err != nil {
		return nil, nil, err
	}
	if len(arr) > 0 {
		if tag, err := arr[0].ToString(); err == nil {
			if tag != "stale" || len(arr)%2 != 1 {
				return nil, nil, fmt.Errorf("unexpected answer %q from the script", tag)
			}
			out := make([]string, len(arr)-1)
			for i := range out {
				out[i], _ = arr[i+1].ToString()
			}
			return nil, out, nil
		}
	}
	v := make([]int64, len(arr))
	for i, m := range arr {
		if v[i], err = m.AsInt64(); err != nil {
			return nil, nil, err
		}
	}
	return v, nil, nil
}

// execWait runs the script and WAIT in one pipeline on the key's master, so WAIT counts the script's write.
func (s *Store) execWait(ctx context.Context, keys, args []string) ([]int64, []string, error) {
	run := func(cmd rueidis.Completed) ([]int64, []string, error) {
		wait := s.c.B().Wait().Numreplicas(int64(s.wait)).Timeout(s.waitFor.Milliseconds()).Build().SetSlot(keys[0])
		rs := s.c.DoMulti(ctx, cmd, wait)
		v, stale, err := reply(rs[0])
		if err != nil || stale != nil {
			return v, stale, err
		}
		if n, err := rs[1].AsInt64(); err != nil || n < int64(s.wait) {
			s.waitTimeouts.Add(1)
			s.log.Debug("redis: write not acknowledged by enough replicas in time", "want", s.wait, "got", n, "err", err)
		}
		return v, nil, nil
	}
	v, stale, err := run(s.c.B().Evalsha().Sha1(decideSha).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build())
	if re, ok := rueidis.IsRedisErr(err); ok && re.IsNoScript() {
		v, stale, err = run(s.c.B().Eval().Script(decideSource).Numkeys(int64(len(keys))).Key(keys...).Arg(args...).Build())
	}
	return v, stale, err
}

// Decide implements domain.BucketStore in one round trip (and, for a stored check whose policy this replica holds
// stale, one more per change it missed: see runGroup).
func (s *Store) Decide(ctx context.Context, r domain.BucketRequest) (domain.Decision, error) {
	if r.Stored && s.pol.Load() != nil {
		key := s.Key(r.Policy, r.Key)
		ds := make([]domain.Decision, 1)
		if _, err := s.runGroup(ctx, []domain.BucketRequest{r}, group{slot: Slot(key), idx: []int{0}, keys: []string{key}}, "d", "0", ds); err != nil {
			return domain.Decision{}, s.fail("decide", err)
		}
		return ds[0], nil
	}
	args := []string{"d", s.instant(), "0", string(s.appendCheck(make([]byte, 0, checkSize+4), r, unchecked)), ""}
	v, _, err := s.exec(ctx, []string{s.Key(r.Policy, r.Key)}, args, r.Cost > 0)
	if err != nil {
		return domain.Decision{}, s.fail("decide", err)
	}
	if len(v) != results {
		return domain.Decision{}, fmt.Errorf("redis decide: %d integers from the script, want %d", len(v), results)
	}
	return decision(r, v), nil
}

// Slot is the Redis Cluster hash slot of a key with a hash tag (CRC16/XMODEM of the tag, mod 16384).
func Slot(key string) uint16 {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	var crc uint16
	for i := 0; i < len(key); i++ {
		crc ^= uint16(key[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc & 16383
}

// group is the checks of one slot, in request order.
type group struct {
	slot uint16
	idx  []int
	keys []string
}

func (s *Store) groups(rs []domain.BucketRequest) []group {
	if !s.cluster {
		g := group{idx: make([]int, len(rs)), keys: make([]string, len(rs))}
		for i, r := range rs {
			g.idx[i], g.keys[i] = i, s.Key(r.Policy, r.Key)
		}
		return []group{g}
	}
	by := map[uint16]int{}
	var gs []group
	for i, r := range rs {
		k := s.Key(r.Policy, r.Key)
		sl := Slot(k)
		j, ok := by[sl]
		if !ok {
			j = len(gs)
			by[sl] = j
			gs = append(gs, group{slot: sl})
		}
		gs[j].idx = append(gs[j].idx, i)
		gs[j].keys = append(gs[j].keys, k)
	}
	sort.Slice(gs, func(a, b int) bool { return gs[a].slot < gs[b].slot })
	return gs
}

// DecideBatch implements domain.BucketStore.
//
// Checks whose keys share a slot (all of them on a single Redis) are decided by one script call: atomic as a
// script is, in request order. On a cluster, the checks of different slots are decided by one call per slot.
// Without atomic these calls run concurrently (the client pipelines them); each check still sees the units of
// the checks of its own key before it, which share its slot.
//
// Atomic batches across slots keep the port's promise (nothing recorded unless every non-shadow check is
// admitted) by reserving: each slot's checks are decided and, if all admitted, recorded, one slot after another
// in ascending slot order; when a slot refuses, the reservations already made are undone (decide.lua's undo mode
// removes exactly the reserved units, wherever later checks left them). The cost: one round trip per slot plus
// one per reserved slot to undo on a refusal; while reserved, units count against concurrent checks (which may
// be refused though the batch is rolled back: under-admission, never over-admission); and if this replica dies or
// loses Redis between reserve and undo, the reserved units stay until they expire (again under-admission). The
// decisions returned are as evaluated, slot by slot; a check of a key sees the earlier checks of that key.
func (s *Store) DecideBatch(ctx context.Context, rs []domain.BucketRequest, atomic bool) ([]domain.Decision, error) {
	if len(rs) == 0 {
		return nil, nil
	}
	if s.pol.Load() != nil && slices.ContainsFunc(rs, func(r domain.BucketRequest) bool { return r.Stored }) {
		rs = slices.Clone(rs) // runGroup binds stored checks to the policy copy's rules in place
	}
	gs := s.groups(rs)
	ds := make([]domain.Decision, len(rs))
	if len(gs) == 1 {
		if _, err := s.decideGroup(ctx, rs, gs[0], atomic, ds); err != nil {
			return nil, s.fail("decide batch", err)
		}
		return ds, nil
	}
	if !atomic {
		errs := make([]error, len(gs))
		var wg sync.WaitGroup
		for gi := range gs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, errs[gi] = s.decideGroup(ctx, rs, gs[gi], atomic, ds)
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return nil, s.fail("decide batch", err)
			}
		}
		return ds, nil
	}
	var reserved []reservation
	for gi, g := range gs {
		rec, err := s.decideGroup(ctx, rs, g, true, ds)
		if err == nil && !groupAdmitted(rs, g, ds) {
			err = errRefused
		}
		if err != nil {
			if uerr := s.undo(ctx, rs, reserved); uerr != nil {
				s.log.Warn("redis: could not undo the reservations of a refused atomic multi-check; the reserved units count until they expire", "err", uerr)
			}
			if err == errRefused {
				// The batch is not committed: the later slots' checks are evaluated without recording.
				for _, g := range gs[gi+1:] {
					if _, err := s.runGroup(ctx, rs, g, "n", "1", ds); err != nil {
						return nil, s.fail("decide batch", err)
					}
				}
				return ds, nil
			}
			return nil, s.fail("decide batch", err)
		}
		reserved = append(reserved, reservation{g: g, rec: rec})
	}
	return ds, nil
}

var errRefused = errors.New("refused")

type reservation struct {
	g   group
	rec []int64 // per check of g: the instant its units were recorded at (0: none)
}

func groupAdmitted(rs []domain.BucketRequest, g group, ds []domain.Decision) bool {
	for _, i := range g.idx {
		if !ds[i].Allowed && !rs[i].Shadow {
			return false
		}
	}
	return true
}

// decideGroup decides the checks of g in one script call and stores their decisions in ds. It returns, per
// check, the instant its units were recorded at (0 when none).
func (s *Store) decideGroup(ctx context.Context, rs []domain.BucketRequest, g group, atomic bool, ds []domain.Decision) ([]int64, error) {
	at := "0"
	if atomic {
		at = "1"
	}
	return s.runGroup(ctx, rs, g, "d", at, ds)
}

// runGroup runs the script on g's checks in mode "d" (decide, and record unless an atomic call is refused) or
// "n" (decide, record nothing), stores their decisions in ds and returns, per check, the instant its units were
// recorded at (0 when none).
//
// Stored checks (API policies, when this store has a policy copy) are first bound to the copy: each is sent with
// the copy's rule of its policy and the copy's revision, and the script compares those with the records in Redis
// (decide.lua's header). When it answers stale it has written nothing: the records it returned are installed in
// the copy (on a cluster, a slot copy behind the policies hash is repaired from it first), and the checks are
// sent again, at most maxStale times. A check whose policy Redis does not hold is answered StatusPolicyNotFound;
// one whose cost is above the limit in force StatusCostOverLimit (it is sent as a peek, so its revision is still
// checked); either makes an atomic call record nothing, as on the other stores.
func (s *Store) runGroup(ctx context.Context, rs []domain.BucketRequest, g group, mode, atomic string, ds []domain.Decision) ([]int64, error) {
	p := s.pol.Load()
	stored := false
	for _, i := range g.idx {
		stored = stored || (p != nil && rs[i].Stored)
	}
	rec := make([]int64, len(g.idx))
	if !stored {
		return rec, s.send(ctx, rs, g.idx, g.keys, nil, "", mode, atomic, ds, rec)
	}
	recordsKey := p.recordsKey(g.slot)
	status := make([]domain.Status, len(g.idx))
	for attempt := 0; ; attempt++ {
		send := make([]domain.BucketRequest, 0, len(g.idx))
		var sent []int // positions in g.idx
		var keys []string
		var revs []int64
		sendMode := mode
		for j, i := range g.idx {
			r, rev := rs[i], int64(unchecked)
			if r.Stored {
				pol, ok := p.held(r.Policy)
				switch {
				case ok:
					rs[i].Rule, r.Rule, rev, status[j] = pol.Rule(), pol.Rule(), pol.Revision, domain.StatusOK
				case attempt > 0: // Redis answered that the policy does not exist
					status[j] = domain.StatusPolicyNotFound
				default:
					rev = -1 // not held: sent with the caller's (provisional) rule, which the script answers stale
				}
				if status[j] == domain.StatusOK && r.Cost > r.Limit {
					status[j], r.Cost = domain.StatusCostOverLimit, 0
				}
				if status[j] != domain.StatusOK {
					ds[i] = domain.Decision{Status: status[j], Limit: r.Limit}
					if atomic == "1" {
						sendMode = "n"
					}
					if status[j] == domain.StatusPolicyNotFound {
						continue
					}
				}
			}
			send, sent, keys, revs = append(send, r), append(sent, j), append(keys, g.keys[j]), append(revs, rev)
		}
		if len(send) == 0 {
			return rec, nil
		}
		idx := make([]int, len(send))
		for k := range idx {
			idx[k] = k
		}
		out := make([]domain.Decision, len(send))
		got := make([]int64, len(send))
		stale, err := s.sendStale(ctx, send, idx, keys, revs, recordsKey, sendMode, atomic, out, got)
		if err != nil {
			return nil, err
		}
		if stale == nil {
			for k, j := range sent {
				if status[j] == domain.StatusOK {
					ds[g.idx[j]], rec[j] = out[k], got[k]
				}
			}
			return rec, nil
		}
		if attempt == maxStale {
			return nil, fmt.Errorf("the policies %q changed %d times while one decision was sent", stale[0], maxStale+1)
		}
		if err := p.resolve(ctx, recordsKey, stale); err != nil {
			return nil, err
		}
	}
}

// maxStale bounds the retries of one decision whose policy copy the script found stale: each retry follows a
// change made meanwhile, so only a policy changed faster than a round trip, over and over, exhausts it.
const maxStale = 3

// send runs the script once on the checks rs[i], i in idx (keys: theirs), with revs and recordsKey for stored
// checks (nil, "": none), storing decisions in ds and recorded instants in rec (indexed like idx).
func (s *Store) send(ctx context.Context, rs []domain.BucketRequest, idx []int, keys []string, revs []int64, recordsKey, mode, atomic string, ds []domain.Decision, rec []int64) error {
	stale, err := s.sendStale(ctx, rs, idx, keys, revs, recordsKey, mode, atomic, ds, rec)
	if err == nil && stale != nil {
		err = errors.New("the script answered stale for a call without stored checks")
	}
	return err
}

func (s *Store) sendStale(ctx context.Context, rs []domain.BucketRequest, idx []int, keys []string, revs []int64, recordsKey, mode, atomic string, ds []domain.Decision, rec []int64) ([]string, error) {
	writes := false
	for _, i := range idx {
		writes = writes || rs[i].Cost > 0
	}
	withRecords := ""
	if recordsKey != "" {
		keys, withRecords = append(keys[:len(keys):len(keys)], recordsKey), "1"
	}
	v, stale, err := s.exec(ctx, keys, []string{mode, s.instant(), atomic, s.packChecks(rs, idx, revs), withRecords}, writes && mode == "d")
	if err != nil || stale != nil {
		return stale, err
	}
	if len(v) != results*len(idx) {
		return nil, fmt.Errorf("%d integers from the script for %d checks", len(v), len(idx))
	}
	for j, i := range idx {
		ds[i] = decision(rs[i], v[results*j:results*j+results])
		rec[j] = v[results*j+4]
	}
	return nil, nil
}

// undo removes the units of reservations (decide.lua's undo mode), one call per slot.
func (s *Store) undo(ctx context.Context, rs []domain.BucketRequest, reserved []reservation) error {
	var first error
	for _, res := range reserved {
		recs := make([]byte, 0, 8*len(res.rec))
		for _, rec := range res.rec {
			recs = appendDouble(recs, rec)
		}
		args := []string{"u", s.instant(), "0", s.packChecks(rs, res.g.idx, nil), string(recs)}
		// Undo must not be cut short by a caller that gave up: the units would stay reserved.
		if _, _, err := s.exec(context.WithoutCancel(ctx), res.g.keys, args, false); err != nil && first == nil {
			first = err
		}
	}
	return first
}

// Reset implements domain.BucketStore.
func (s *Store) Reset(ctx context.Context, policy, key string) error {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if err := s.c.Do(ctx, s.c.B().Del().Key(s.Key(policy, key)).Build()).Error(); err != nil {
		return s.fail("reset", err)
	}
	return nil
}

// DropPolicy implements domain.BucketStore: it scans every master for the policy's keys and deletes them. The
// policy's generation already keeps them from counting against a later policy of the same name; this frees
// their memory sooner than their expiry would.
func (s *Store) DropPolicy(ctx context.Context, policy string) error {
	pattern := "{*}" + globEscape(s.prefix+strconv.Itoa(len(policy))+":"+policy+":") + "*"
	for _, n := range s.c.Nodes() {
		role, err := n.Do(ctx, n.B().Role().Build()).ToArray()
		if err != nil {
			return s.fail("drop policy", err)
		}
		if r, _ := role[0].ToString(); r != "master" {
			continue
		}
		var cursor uint64
		for {
			e, err := n.Do(ctx, n.B().Scan().Cursor(cursor).Match(pattern).Count(1000).Build()).AsScanEntry()
			if err != nil {
				return s.fail("drop policy", err)
			}
			for _, k := range e.Elements {
				if err := n.Do(ctx, n.B().Unlink().Key(k).Build()).Error(); err != nil {
					return s.fail("drop policy", err)
				}
			}
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
	return nil
}

// extendTTLs adds d to the expiry of every key of policy (a scan of every master): see Policies.PutPolicy.
func (s *Store) extendTTLs(ctx context.Context, policy string, d time.Duration) error {
	pattern := "{*}" + globEscape(s.prefix+strconv.Itoa(len(policy))+":"+policy+":") + "*"
	ms := strconv.FormatInt(d.Milliseconds()+1, 10)
	for _, n := range s.c.Nodes() {
		role, err := n.Do(ctx, n.B().Role().Build()).ToArray()
		if err != nil {
			continue // a node that is down holds no slots it could serve
		}
		if r, _ := role[0].ToString(); r != "master" {
			continue
		}
		var cursor uint64
		for {
			e, err := n.Do(ctx, n.B().Scan().Cursor(cursor).Match(pattern).Count(1000).Build()).AsScanEntry()
			if err != nil {
				return err
			}
			for _, k := range e.Elements {
				if err := extendScript.Exec(ctx, n, []string{k}, []string{ms}).Error(); err != nil && !rueidis.IsRedisNil(err) {
					return err
				}
			}
			if cursor = e.Cursor; cursor == 0 {
				break
			}
		}
	}
	return nil
}

// extendScript adds ARGV[1] ms to a key's expiry, atomically (a key rewritten meanwhile keeps its new expiry
// plus the growth, never less).
var extendScript = rueidis.NewLuaScript(`local t = redis.call('PTTL', KEYS[1])
if t > 0 then redis.call('PEXPIRE', KEYS[1], t + tonumber(ARGV[1])) end
return t`)

func globEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// Ping implements domain.BucketStore for /readyz and /healthz/store. It fails while the last RecheckEviction
// found a node that may evict keys. A single Redis (or Sentinel's master) must answer PING. A
// cluster is ready when a node answers and reports cluster_state:ok (every slot served by a reachable master): a
// dead replica, or a master already replaced by its replica, does not make every sluice pod unready.
func (s *Store) Ping(ctx context.Context) error {
	if p := s.evictionProblem.Load(); p != nil && *p != nil {
		return *p
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	if !s.cluster {
		if err := s.c.Do(ctx, s.c.B().Ping().Build()).Error(); err != nil {
			return fmt.Errorf("redis ping: %w", err)
		}
		return nil
	}
	var errs []error
	for addr, n := range s.c.Nodes() {
		info, err := n.Do(ctx, n.B().ClusterInfo().Build()).ToString()
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", addr, err))
			continue
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("redis cluster not ok (as %s sees it): some slots have no reachable master", addr)
		}
		return nil
	}
	return fmt.Errorf("redis ping: no cluster node answered: %w", errors.Join(errs...))
}

func (s *Store) fail(op string, err error) error {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("redis %s: no answer within the timeout (%s): %w", op, s.timeout, err)
	}
	return fmt.Errorf("redis %s: %w", op, err)
}

// Hold implements domain.BucketStore: one hold operation (domain.Bucket.ApplyHold's step, mirrored by decide.lua's
// holdop) as one script call on the key's slot (a batch of one: ApplyBatch), with the Redis clock (a test clock
// when set, as for checks). The key's hold records live in its value beside its state, so a check and a hold op of
// one key are one atomic step each and the key's expiry covers every record that still matters. A stored check's
// policy is fenced by revision as a decision's is (runGroup): a stale copy costs a round trip per missed change, a
// policy Redis no longer holds answers StatusPolicyNotFound, an acquire over the limit in force
// StatusCostOverLimit (both with the zero HoldStatus and nothing done, as the memory and Postgres stores answer
// them).
func (s *Store) Hold(ctx context.Context, q domain.BucketHold) (domain.HoldDecision, error) {
	hds, err := s.ApplyBatch(ctx, []domain.BucketHold{q})
	if err != nil {
		return domain.HoldDecision{}, err
	}
	return hds[0], nil
}
