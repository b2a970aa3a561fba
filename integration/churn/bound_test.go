package churn

import (
	"fmt"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/integration/serveproc"
)

// change is one policy change the admin clients made, in the order they made them (one policy's changes never
// overlap: the admin clients take the policy's lock for each).
type change struct {
	del        bool // DELETE; otherwise PUT spec
	spec       serveproc.PolicySpec
	replica    string
	sent, done time.Time
	code       int   // HTTP status; 0 when err is set
	err        error // a transport error or an unexpected status
}

// admission is one admitted check of cost units (a check of an admitted atomic batch is one admission each).
type admission struct {
	policy, key string
	cost        int64
	replica     string
	sent, recv  time.Time
}

// generation is one life of a policy, from the PUT that created it to the DELETE that ended it. possStart..possEnd
// is when it may have existed in the store (the creating PUT's send to the DELETE's answer); certStart..certEnd
// when it surely did (the PUT's answer to the DELETE's send). An open generation ends at forever.
type generation struct {
	n                                      int // 1, 2, ... per policy
	possStart, certStart, certEnd, possEnd time.Time
	rules                                  []serveproc.PolicySpec // every rule that was (or may have been) in force
}

var forever = time.Unix(1<<40, 0)

// generations rebuilds a policy's generations from its changes, trusting the store's answers (201 created, 200
// replaced, 204 deleted); an answer the test's own view disagrees with is reported in notes.
func generations(cs []change) (gs []*generation, notes []string) {
	var cur *generation
	open := func(c change) {
		cur = &generation{n: len(gs) + 1, possStart: c.sent, certStart: c.done, certEnd: forever, possEnd: forever}
		gs = append(gs, cur)
	}
	closeAt := func(c change) {
		cur.certEnd, cur.possEnd = c.sent, c.done
		cur = nil
	}
	for _, c := range cs {
		switch {
		case !c.del && c.code == 201:
			if cur != nil {
				notes = append(notes, fmt.Sprintf("PUT on %s at %s answered 201 although generation %d was never deleted", c.replica, c.sent.Format(time.StampMilli), cur.n))
				closeAt(c)
			}
			open(c)
			cur.rules = append(cur.rules, c.spec)
		case !c.del: // 200, or an error: the rule may be in force from now on
			if cur == nil {
				if c.code == 200 {
					notes = append(notes, fmt.Sprintf("PUT on %s at %s answered 200 although the policy had been deleted", c.replica, c.sent.Format(time.StampMilli)))
				}
				open(c)
			}
			cur.rules = append(cur.rules, c.spec)
		default: // DELETE: 204, 404 or an error
			if cur == nil {
				if c.code == 204 {
					notes = append(notes, fmt.Sprintf("DELETE on %s at %s answered 204 although the policy had been deleted", c.replica, c.sent.Format(time.StampMilli)))
				}
				continue
			}
			if c.code == 404 {
				notes = append(notes, fmt.Sprintf("DELETE on %s at %s answered 404 although generation %d existed", c.replica, c.sent.Format(time.StampMilli), cur.n))
			}
			closeAt(c)
		}
	}
	return gs, notes
}

// bound is the most units one key may have admitted under g, for a run shorter than any rule's refill interval
// (window/limit ≥ 1h/8 = 450 s: a token bucket refills less than one unit) in which no fixed window boundary
// falls (crossesHour false; 1h and 1d windows nest, so a day boundary is an hour boundary): the largest limit in
// force, twice that when a fixed_window rule was in force and a boundary fell inside the run.
func (g *generation) bound(crossesHour bool) int64 {
	var limit int64
	fixed := false
	for _, r := range g.rules {
		limit = max(limit, r.Limit)
		fixed = fixed || r.Algorithm == string(domain.FixedWindow)
	}
	if fixed && crossesHour {
		return 2 * limit
	}
	return limit
}

func (g *generation) String() string {
	rs := make([]string, len(g.rules))
	for i, r := range g.rules {
		rs[i] = fmt.Sprintf("%d/%s %s", r.Limit, r.Window, r.Algorithm)
	}
	return fmt.Sprintf("generation %d [%s]", g.n, strings.Join(rs, " → "))
}

// keyCount is what one key admitted under one generation: units surely admitted under it (certain) and units that
// may have been (possible: certain plus admissions that overlap a delete and re-create, which may belong to a
// neighbour instead).
type keyCount struct {
	policy, key       string
	gen               *generation
	certain, possible int64
	bound             int64
}

// verdict is the outcome of attributing a store's admissions.
type verdict struct {
	counts     []keyCount
	violations []violation
}

// violation is a certain over-admission of one key: under generations gens[i..j] of the policy, or (i > j) by an
// admission made when no generation existed, from..to.
type violation struct {
	msg         string
	policy, key string
	i, j        int
	from, to    time.Time // the span to show in a timeline
}

// attribute assigns each admission of one policy to the generations it may belong to (those whose possible life
// overlaps the check's send..answer interval; they are consecutive) and checks the bound. An admission with one
// candidate counts toward it for sure. One with several (a check overlapping a delete and re-create) could belong
// to any of them, so the check is Hall's condition over every run of consecutive generations i..j: the units surely
// in i..j plus the ambiguous units whose candidates all lie in i..j must fit the sum of their bounds. A failure is
// a certain over-admission whatever the assignment; a check admitted when no generation can have existed is one
// too (a deleted policy admitted a check).
func attribute(policy string, gs []*generation, adms []admission, crossesHour bool) verdict {
	var v verdict
	type amb struct {
		lo, hi int
		cost   int64
	}
	byKey := map[string][]admission{}
	for _, a := range adms {
		byKey[a.key] = append(byKey[a.key], a)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	bounds := make([]int64, len(gs))
	for i, g := range gs {
		bounds[i] = g.bound(crossesHour)
	}
	for _, k := range keys {
		certain := make([]int64, len(gs))
		possible := make([]int64, len(gs))
		var ambs []amb
		for _, a := range byKey[k] {
			lo := sort.Search(len(gs), func(i int) bool { return gs[i].possEnd.After(a.sent) })
			hi := lo
			for hi < len(gs) && gs[hi].possStart.Before(a.recv) {
				hi++
			}
			hi-- // candidates lo..hi
			switch {
			case hi < lo:
				v.violations = append(v.violations, violation{
					msg:    fmt.Sprintf("%s/%s: %d admitted by %s (sent %s, answered %s) while no generation of the policy existed", policy, k, a.cost, a.replica, a.sent.Format(time.StampMilli), a.recv.Format(time.StampMilli)),
					policy: policy, key: k, i: 1, j: 0, from: a.sent.Add(-200 * time.Millisecond), to: a.recv.Add(200 * time.Millisecond),
				})
			case hi == lo:
				certain[lo] += a.cost
				possible[lo] += a.cost
			default:
				ambs = append(ambs, amb{lo, hi, a.cost})
				for i := lo; i <= hi; i++ {
					possible[i] += a.cost
				}
			}
		}
		for i, g := range gs {
			if possible[i] > 0 {
				v.counts = append(v.counts, keyCount{policy: policy, key: k, gen: g, certain: certain[i], possible: possible[i], bound: bounds[i]})
			}
		}
		// Ranges by length, reporting only the minimal ones (a range holding a reported one adds nothing).
		type span struct{ i, j int }
		var bad []span
		for n := 1; n <= len(gs); n++ {
		ranges:
			for i := 0; i+n <= len(gs); i++ {
				j := i + n - 1
				for _, b := range bad {
					if b.i >= i && b.j <= j {
						continue ranges
					}
				}
				var in, sumB int64
				for g := i; g <= j; g++ {
					in += certain[g]
					sumB += bounds[g]
				}
				for _, a := range ambs {
					if a.lo >= i && a.hi <= j {
						in += a.cost
					}
				}
				if in <= sumB {
					continue
				}
				bad = append(bad, span{i, j})
				x := violation{policy: policy, key: k, i: i, j: j, from: gs[i].possStart, to: gs[j].possEnd}
				if i == j {
					x.msg = fmt.Sprintf("%s/%s: %d units admitted under %s (%d surely), bound %d", policy, k, in, gs[i], certain[i], sumB)
				} else {
					x.msg = fmt.Sprintf("%s/%s: %d units admitted under generations %d-%d (checks overlapping their delete and re-create counted once), bound %d in all", policy, k, in, gs[i].n, gs[j].n, sumB)
				}
				v.violations = append(v.violations, x)
			}
		}
	}
	return v
}

// timeline shows what happened to one policy and key from x.from to x.to: the policy's changes and the key's
// admissions, in milliseconds since t0, in the order they were sent.
func timeline(x violation, cs []change, adms []admission, t0 time.Time) string {
	type line struct {
		at   time.Time
		text string
	}
	ms := func(t time.Time) string { return fmt.Sprintf("%8.1f", float64(t.Sub(t0).Microseconds())/1000) }
	var ls []line
	for _, c := range cs {
		if c.done.Before(x.from) || c.sent.After(x.to) {
			continue
		}
		what := fmt.Sprintf("PUT %d/%s %s", c.spec.Limit, c.spec.Window, c.spec.Algorithm)
		if c.del {
			what = "DELETE"
		}
		ls = append(ls, line{c.sent, fmt.Sprintf("%s..%s ms  %-8s %s -> %d", ms(c.sent), ms(c.done), c.replica, what, c.code)})
	}
	for _, a := range adms {
		if a.policy != x.policy || a.key != x.key || a.recv.Before(x.from) || a.sent.After(x.to) {
			continue
		}
		ls = append(ls, line{a.sent, fmt.Sprintf("%s..%s ms  %-8s admitted %d", ms(a.sent), ms(a.recv), a.replica, a.cost)})
	}
	sort.SliceStable(ls, func(i, j int) bool { return ls[i].at.Before(ls[j].at) })
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = "    " + l.text
	}
	return strings.Join(out, "\n")
}

// worst is the count furthest above (or closest to) its bound, by certain units.
func worst(cs []keyCount) (keyCount, bool) {
	if len(cs) == 0 {
		return keyCount{}, false
	}
	return slices.MaxFunc(cs, func(a, b keyCount) int {
		da, db := a.certain-a.bound, b.certain-b.bound
		if da != db {
			if da < db {
				return -1
			}
			return 1
		}
		return int(a.possible - b.possible)
	}), true
}

// crossesHour reports whether a UTC hour boundary falls in [from, to] (with a second's margin for the stores'
// clocks, which are this machine's).
func crossesHour(from, to time.Time) bool {
	return from.Add(-time.Second).UTC().Truncate(time.Hour) != to.Add(time.Second).UTC().Truncate(time.Hour)
}

// TestAttribute checks the checker on hand-made histories: the bound, attribution across a delete and
// re-create, and Hall's condition over neighbours.
func TestAttribute(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	put := func(sent, done, code int, limit int64, alg string) change {
		return change{spec: serveproc.PolicySpec{Limit: limit, Window: "1h", Algorithm: alg}, sent: at(sent), done: at(done), code: code}
	}
	del := func(sent, done int) change { return change{del: true, sent: at(sent), done: at(done), code: 204} }
	adm := func(sent, recv int, cost int64) admission {
		return admission{policy: "p", key: "k", cost: cost, sent: at(sent), recv: at(recv)}
	}
	// Generation 1: 5 then 3 (bound 5); generation 2 from 200 ms: 3 (bound 3).
	gs, notes := generations([]change{put(0, 10, 201, 5, "sliding_log"), put(50, 60, 200, 3, "fixed_window"), del(100, 110), put(120, 130, 201, 3, "token_bucket")})
	if len(gs) != 2 || len(notes) != 0 || gs[0].bound(false) != 5 || gs[0].bound(true) != 10 || gs[1].bound(true) != 3 {
		t.Fatalf("generations: %v %v", gs, notes)
	}
	cases := []struct {
		name string
		adms []admission
		bad  bool
	}{
		{"at the bounds", []admission{adm(20, 30, 2), adm(20, 30, 2), adm(70, 80, 1), adm(140, 150, 2), adm(140, 150, 1)}, false},
		{"over in generation 1", []admission{adm(20, 30, 2), adm(20, 30, 2), adm(70, 80, 2)}, true},
		// Overlapping the delete and re-create: 3 ambiguous units fit (1 more in generation 1, 2 in generation 2).
		{"ambiguous that fit", []admission{adm(20, 30, 2), adm(20, 30, 2), adm(105, 125, 1), adm(105, 125, 2), adm(140, 150, 1)}, false},
		// 4 + 1 + 3 ambiguous + 1 = 9 > 5 + 3.
		{"ambiguous that cannot fit", []admission{adm(20, 30, 2), adm(20, 30, 2), adm(105, 125, 1), adm(105, 125, 2), adm(140, 150, 2)}, true},
		{"between generations", []admission{adm(111, 119, 1)}, true},
	}
	for _, c := range cases {
		v := attribute("p", gs, c.adms, false)
		if bad := len(v.violations) > 0; bad != c.bad {
			t.Errorf("%s: violations %v, want some: %v", c.name, v.violations, c.bad)
		}
	}
	if !crossesHour(at(-500), at(0)) || crossesHour(at(1500), at(3_000_000)) {
		t.Error("crossesHour")
	}
}
