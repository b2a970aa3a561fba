package domain

import (
	"fmt"
	"sort"
	"strings"
	"time"
	"unicode/utf8"
)

// Overrides (shared/design.md, "Overrides"; issue 24): per policy, a limit and optionally a window for one exact
// key or for every key with a prefix. This file holds their semantics, store-independent: which override a key
// resolves to, what it inherits, and the floor the expiry rule needs for every key when overrides and the policy
// change. A store or a policy store keeps the overrides; the decision is the key's Rule (OverrideSet.Rule).
//
// Resolution: the exact override of the key, else the override of the longest prefix of the key, else none (the
// policy's own limit and window). Deterministic whatever the order overrides were made in.
//
// Inheritance: an override always sets its limit; its window, when not set, is the window its keys would have
// without it (the next shorter matching override's, else the policy's), and follows that one's changes.
//
// The expiry rule per key: a key's window (or the policy's algorithm or calendar period) changes when an
// override that applies to it is made, changed or deleted, or when the entry it inherits from changes; each such
// change at instant t raises the key's floor to t minus the window it had, exactly as NextFloor does for a policy
// (a key whose window did not change keeps its floor). Every key resolving to one entry shares one history, so the
// floor is kept per entry: an entry's floor is raised by every change of its keys' window, and a new entry starts
// with the floor of the entry its keys resolved to before. A deleted override whose keys' window changes leaves
// a tombstone (an entry inheriting limit and window, keeping its floor) for as long as that floor still stops a
// unit the inherited window would count; Compact removes the ones that no longer do.

// MaxPrefixLengths bounds the distinct lengths of one policy's prefix overrides: a lookup probes once per
// distinct length (tiers usually have a handful: "tenant:42:*" and "tenant:4242:*" are two), so an operator
// cannot make every decision of the policy walk hundreds of them.
const MaxPrefixLengths = 64

// Override is a per-key limit of a policy.
type Override struct {
	// Match is an exact key, or a key prefix followed by "*" (every key starting with the prefix). A key that
	// itself ends in "*" can only be matched by a prefix.
	Match string
	// Limit in [1, MaxLimit].
	Limit int64
	// Window is the keys' window (0: inherited, see the file comment), as a policy's window: 1 s to 31 d, whole
	// milliseconds; never with a calendar period.
	Window time.Duration
}

// Prefix reports whether o matches a prefix and returns it.
func (o Override) Prefix() (string, bool) {
	if p, ok := strings.CutSuffix(o.Match, "*"); ok {
		return p, true
	}
	return "", false
}

// ValidateOverride reports every broken rule of o as an override of p, with field names prefixed by prefix.
func ValidateOverride(p Policy, o Override, prefix string) error {
	v := &ValidationError{}
	if pre, ok := o.Prefix(); ok {
		switch {
		case pre == "":
			v.Add(prefix+"match", `"*" alone matches every key: change the policy instead`)
		case len(pre) >= MaxKeyBytes:
			v.Add(prefix+"match", fmt.Sprintf("a prefix must be shorter than a key's %d bytes, got %d", MaxKeyBytes, len(pre)))
		case !utf8.ValidString(pre):
			v.Add(prefix+"match", "must be valid UTF-8")
		}
	} else if err := ValidateKey(o.Match); err != nil {
		v.Add(prefix+"match", err.Error())
	}
	if o.Limit < 1 || o.Limit > MaxLimit {
		v.Add(prefix+"limit", fmt.Sprintf("must be an integer from 1 to 9007199254740991 (2^53-1), got %d", o.Limit))
	}
	switch {
	case o.Window == 0:
	case p.Period != nil:
		v.Add(prefix+"window", "a calendar quota's overrides change its limit only: its period is the policy's")
	case o.Window < MinWindow || o.Window > MaxWindow || o.Window%time.Millisecond != 0:
		v.Add(prefix+"window", fmt.Sprintf("must be 0 (the policy's) or a whole number of milliseconds between 1s and 31d, got %s", FormatDuration(o.Window)))
	}
	return v.Err()
}

// OverrideSet is the overrides of one generation of one policy with their floors. It is not safe for concurrent
// use: its owner serialises changes and guards lookups.
type OverrideSet struct {
	policy   Policy              // as last given (NewOverrideSet, Apply): the values of keys no override matches
	exact    map[string]*ovEntry // by key
	prefixes map[string]*ovEntry // by prefix
	lens     []int               // the distinct lengths of prefixes, longest first
	lenCount map[int]int         // how many prefixes have each length
	sorted   ovIndex             // every entry by (s, exact): a prefix's descendants follow it
	sweepAt  int                 // Put and Delete run Compact once this many tombstones are kept (0: 64)
	live     int                 // entries that are not tombstones
}

// ovEntry is one override, or the tombstone of a deleted one.
type ovEntry struct {
	s      string // the key (exact) or the prefix
	exact  bool
	limit  int64         // as set; 0 for a tombstone (inherited)
	window time.Duration // as set; 0: inherited
	// What its keys get, kept current through every change (materialised: a lookup reads one entry).
	effLimit  int64
	effWindow time.Duration
	floor     int64
}

func (e *ovEntry) tomb() bool { return e.limit == 0 }

// newEntry is the entry of match, not yet an override (a tombstone until its limit is set).
func newEntry(match string) *ovEntry {
	if pre, ok := (Override{Match: match}).Prefix(); ok {
		return &ovEntry{s: pre}
	}
	return &ovEntry{s: match, exact: true}
}

func (e *ovEntry) match() string {
	if e.exact {
		return e.s
	}
	return e.s + "*"
}

func ovLess(a, b *ovEntry) bool {
	if a.s != b.s {
		return a.s < b.s
	}
	return !a.exact && b.exact
}

// NewOverrideSet returns the empty set of p's overrides.
func NewOverrideSet(p Policy) *OverrideSet {
	return &OverrideSet{policy: p, exact: map[string]*ovEntry{}, prefixes: map[string]*ovEntry{}, lenCount: map[int]int{}}
}

// Len is how many overrides the set holds (tombstones not counted).
func (s *OverrideSet) Len() int { return s.live }

// Rule is the rule a check of key decides with under p (the policy the set was last given) and the match of the
// override that applied ("" for none: p's own rule).
func (s *OverrideSet) Rule(key string) (Rule, string) {
	r := s.policy.Rule()
	e := s.resolve(key)
	if e == nil {
		return r, ""
	}
	r.Limit, r.Floor = e.effLimit, e.floor
	if e.effWindow != r.Window {
		r.Window = e.effWindow
		if r.Resolution != 0 {
			r.Resolution = DefaultResolution(e.effWindow)
		}
	}
	for e != nil && e.tomb() { // a tombstone's keys get what its nearest override gives them (its floor is its own)
		e = s.parentOf(e)
	}
	if e == nil {
		return r, ""
	}
	return r, e.match()
}

// resolve returns the entry key resolves to (a tombstone included), nil for the policy itself.
func (s *OverrideSet) resolve(key string) *ovEntry {
	if e := s.exact[key]; e != nil {
		return e
	}
	for _, n := range s.lens {
		if n <= len(key) {
			if e := s.prefixes[key[:n]]; e != nil {
				return e
			}
		}
	}
	return nil
}

// parentOf returns the entry the keys of e would resolve to without it: the longest proper prefix entry (nil: the
// policy).
func (s *OverrideSet) parentOf(e *ovEntry) *ovEntry {
	for _, n := range s.lens {
		if n < len(e.s) || (e.exact && n == len(e.s)) {
			if p := s.prefixes[e.s[:n]]; p != nil {
				return p
			}
		}
	}
	return nil
}

func (s *OverrideSet) eff(e *ovEntry) (limit int64, window time.Duration, floor int64) {
	if e == nil {
		return s.policy.Limit, s.policy.Window, s.policy.Floor
	}
	return e.effLimit, e.effWindow, e.floor
}

// tooManyLengths reports whether adding o would give the set more than MaxPrefixLengths distinct prefix lengths.
// Deleted prefixes count while their tombstones bind.
func (s *OverrideSet) tooManyLengths(o Override, now int64) bool {
	pre, ok := o.Prefix()
	if !ok || s.lenCount[len(pre)] > 0 || len(s.lens) < MaxPrefixLengths {
		return false
	}
	s.Compact(now)
	return len(s.lens) >= MaxPrefixLengths
}

// Get returns the override with the given match.
func (s *OverrideSet) Get(match string) (Override, bool) {
	e := s.lookup(match)
	if e == nil || e.tomb() {
		return Override{}, false
	}
	return Override{Match: e.match(), Limit: e.limit, Window: e.window}, true
}

func (s *OverrideSet) lookup(match string) *ovEntry {
	if pre, ok := (Override{Match: match}).Prefix(); ok {
		return s.prefixes[pre]
	}
	return s.exact[match]
}

// List returns up to n overrides (n ≤ 0: all) in order (by key or prefix; a prefix before the exact key equal to
// it), starting after the override whose match is after ("": from the first; it need not exist any more), and
// whether more follow.
func (s *OverrideSet) List(after string, n int) ([]Override, bool) {
	var out []Override
	more := false
	var pivot *ovEntry
	if after != "" {
		pre, isPrefix := (Override{Match: after}).Prefix()
		pivot = &ovEntry{s: after, exact: true}
		if isPrefix {
			pivot = &ovEntry{s: pre}
		}
	}
	visit := func(e *ovEntry) bool {
		if e.tomb() || (pivot != nil && !ovLess(pivot, e)) {
			return true
		}
		if n > 0 && len(out) == n {
			more = true
			return false
		}
		out = append(out, Override{Match: e.match(), Limit: e.limit, Window: e.window})
		return true
	}
	if pivot == nil {
		s.sorted.ascendFrom(nil, visit)
	} else {
		s.sorted.ascendFrom(pivot, visit)
	}
	return out, more
}

// Put makes o (validated with ValidateOverride) the override of its match at now and reports whether it is new.
func (s *OverrideSet) Put(o Override, now int64) bool {
	e := s.lookup(o.Match)
	created := e == nil || e.tomb()
	if e == nil {
		e = newEntry(o.Match)
		// Its keys resolved to its parent until now: they share the parent's history.
		e.effLimit, e.effWindow, e.floor = s.eff(s.parentOf(e))
		s.insert(e)
	}
	if created {
		s.live++
	}
	e.limit, e.window = o.Limit, o.Window
	s.refresh(e, now)
	s.sweep(now)
	return created
}

// Delete removes the override of match at now and reports whether there was one.
func (s *OverrideSet) Delete(match string, now int64) bool {
	e := s.lookup(match)
	if e == nil || e.tomb() {
		return false
	}
	s.live--
	e.limit, e.window = 0, 0
	s.refresh(e, now)
	s.drop(e, now)
	s.sweep(now)
	return true
}

// sweep runs Compact when the set keeps many tombstones (at least 64, and twice as many as after the last sweep):
// a tombstone binds for at most its keys' window, so they do not pile up, at an amortised constant cost.
func (s *OverrideSet) sweep(now int64) {
	if s.sorted.len()-s.live < max(s.sweepAt, 64) {
		return
	}
	s.Compact(now)
	s.sweepAt = 2 * (s.sorted.len() - s.live)
}

// PolicyChanged makes p, the policy as changed at now (its floor already raised by NextFloor when its counting
// changed), the policy of the set: Apply with no override changed.
func (s *OverrideSet) PolicyChanged(p Policy, now int64) { s.Apply(p, nil, nil, now) }

// Apply makes p the policy of the set and puts and deletes overrides (each validated, no match twice), all at the
// one instant now (a reloaded config file changes them together). Every key whose window or counting (the policy's
// algorithm or calendar period) changed gets its floor raised once, by the window it had before all of them: a
// window it had only between two of the changes never counted. It walks every entry.
func (s *OverrideSet) Apply(p Policy, puts []Override, deletes []string, now int64) {
	before := make(map[*ovEntry]time.Duration, s.sorted.len())
	s.sorted.ascendFrom(nil, func(e *ovEntry) bool {
		before[e] = e.effWindow
		return true
	})
	// A new entry's keys had what its parent in the set as it is gives them: found before any entry is added.
	var created []*ovEntry
	for _, o := range puts {
		if s.lookup(o.Match) == nil {
			e := newEntry(o.Match)
			e.effLimit, e.effWindow, e.floor = s.eff(s.parentOf(e))
			before[e] = e.effWindow
			created = append(created, e)
		}
	}
	for _, e := range created {
		s.insert(e)
	}
	for _, o := range puts {
		e := s.lookup(o.Match)
		if e.tomb() {
			s.live++
		}
		e.limit, e.window = o.Limit, o.Window
	}
	for _, m := range deletes {
		if e := s.lookup(m); e != nil && !e.tomb() {
			s.live--
			e.limit, e.window = 0, 0
		}
	}
	old := s.policy
	s.policy = p
	all := p.Algorithm != old.Algorithm || !p.Period.Equal(old.Period)
	var tombs []*ovEntry
	// In ovLess order a prefix comes before every entry under it: each parent is current before its children.
	s.sorted.ascendFrom(nil, func(e *ovEntry) bool {
		pl, pw, _ := s.eff(s.parentOf(e))
		e.effLimit, e.effWindow = e.limit, e.window
		if e.limit == 0 {
			e.effLimit = pl
			tombs = append(tombs, e)
		}
		if e.window == 0 {
			e.effWindow = pw
		}
		if all || e.effWindow != before[e] {
			e.floor = max(e.floor, now-int64(before[e]/time.Microsecond))
		}
		return true
	})
	for _, e := range tombs {
		s.drop(e, now)
	}
}

// refresh recomputes e's effective values from its own and its parent's and, when they changed, its
// descendants' that inherit through it; a changed window raises the floor of the keys it changed.
func (s *OverrideSet) refresh(e *ovEntry, now int64) {
	pl, pw, _ := s.eff(s.parentOf(e))
	limit, window := e.limit, e.window
	if limit == 0 {
		limit = pl
	}
	if window == 0 {
		window = pw
	}
	if limit == e.effLimit && window == e.effWindow {
		return
	}
	if window != e.effWindow {
		e.floor = max(e.floor, now-int64(e.effWindow/time.Microsecond))
	}
	e.effLimit, e.effWindow = limit, window
	if e.exact {
		return
	}
	// The direct children: entries under e's prefix whose parent is e.
	var kids []*ovEntry
	s.sorted.ascendFrom(&ovEntry{s: e.s}, func(d *ovEntry) bool {
		if !strings.HasPrefix(d.s, e.s) {
			return false
		}
		if d != e && s.parentOf(d) == e {
			kids = append(kids, d)
		}
		return true
	})
	for _, d := range kids {
		s.refresh(d, now)
	}
}

// drop removes e, a tombstone, when its keys lose nothing by resolving to its parent: both floors cut the same
// units now (equal, or neither past now minus the window the keys have, which then cuts more), and every later
// change raises the floors of both alike.
func (s *OverrideSet) drop(e *ovEntry, now int64) {
	_, _, pf := s.eff(s.parentOf(e))
	cut := now - int64(e.effWindow/time.Microsecond)
	if e.floor == pf || (e.floor <= cut && pf <= cut) {
		s.remove(e)
	}
}

// Compact removes the tombstones that no longer bind at now (see drop). Lookups stay correct without it; it
// bounds the memory deleted overrides keep.
func (s *OverrideSet) Compact(now int64) {
	var tombs []*ovEntry
	s.sorted.ascendFrom(nil, func(e *ovEntry) bool {
		if e.tomb() {
			tombs = append(tombs, e)
		}
		return true
	})
	for _, e := range tombs {
		s.drop(e, now)
	}
}

func (s *OverrideSet) insert(e *ovEntry) {
	s.sorted.insert(e)
	if e.exact {
		s.exact[e.s] = e
		return
	}
	s.prefixes[e.s] = e
	n := len(e.s)
	s.lenCount[n]++
	if s.lenCount[n] == 1 {
		i := 0
		for i < len(s.lens) && s.lens[i] > n {
			i++
		}
		s.lens = append(s.lens, 0)
		copy(s.lens[i+1:], s.lens[i:])
		s.lens[i] = n
	}
}

func (s *OverrideSet) remove(e *ovEntry) {
	s.sorted.remove(e)
	if e.exact {
		delete(s.exact, e.s)
		return
	}
	delete(s.prefixes, e.s)
	n := len(e.s)
	s.lenCount[n]--
	if s.lenCount[n] == 0 {
		delete(s.lenCount, n)
		for i, l := range s.lens {
			if l == n {
				s.lens = append(s.lens[:i], s.lens[i+1:]...)
				break
			}
		}
	}
}

// ovIndex is the entries in ovLess order, in sorted blocks of at most ovBlock: an insertion or a removal moves at
// most a block, a lookup is two binary searches, and a prefix's descendants are one ascending walk from it. (The
// domain imports the standard library only; this is all the ordered container it needs.)
type ovIndex struct{ blocks [][]*ovEntry }

const ovBlock = 512

func (x *ovIndex) len() int {
	n := 0
	for _, b := range x.blocks {
		n += len(b)
	}
	return n
}

// find returns the block that holds x or would, and x's position in it (the first entry not less than x).
func (x *ovIndex) find(e *ovEntry) (int, int) {
	i := sort.Search(len(x.blocks), func(i int) bool { return ovLess(e, x.blocks[i][0]) }) - 1
	i = max(i, 0)
	b := x.blocks[i]
	return i, sort.Search(len(b), func(j int) bool { return !ovLess(b[j], e) })
}

func (x *ovIndex) insert(e *ovEntry) {
	if len(x.blocks) == 0 {
		x.blocks = [][]*ovEntry{{e}}
		return
	}
	i, j := x.find(e)
	b := x.blocks[i]
	if j < len(b) && !ovLess(e, b[j]) {
		b[j] = e
		return
	}
	b = append(b, nil)
	copy(b[j+1:], b[j:])
	b[j] = e
	if len(b) <= ovBlock {
		x.blocks[i] = b
		return
	}
	half := append([]*ovEntry(nil), b[len(b)/2:]...)
	x.blocks[i] = b[: len(b)/2 : len(b)/2]
	x.blocks = append(x.blocks, nil)
	copy(x.blocks[i+2:], x.blocks[i+1:])
	x.blocks[i+1] = half
}

func (x *ovIndex) remove(e *ovEntry) {
	if len(x.blocks) == 0 {
		return
	}
	i, j := x.find(e)
	b := x.blocks[i]
	if j == len(b) || b[j] != e {
		return
	}
	b = append(b[:j], b[j+1:]...)
	if len(b) > 0 {
		x.blocks[i] = b
		return
	}
	x.blocks = append(x.blocks[:i], x.blocks[i+1:]...)
}

// ascendFrom calls fn on every entry not less than from (nil: every entry) in order until fn returns false.
func (x *ovIndex) ascendFrom(from *ovEntry, fn func(*ovEntry) bool) {
	if len(x.blocks) == 0 {
		return
	}
	i, j := 0, 0
	if from != nil {
		i, j = x.find(from)
	}
	for ; i < len(x.blocks); i, j = i+1, 0 {
		for _, e := range x.blocks[i][j:] {
			if !fn(e) {
				return
			}
		}
	}
}
