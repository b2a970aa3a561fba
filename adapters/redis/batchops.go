package redis

import (
	"context"
	"encoding/binary"
	"fmt"
	"sync"
	"time"

	"github.com/sluice-dev/sluice/domain"
)

// ApplyBatch applies checks (domain.OpCheck) and hold operations in order, each atomically on its key exactly as
// Decide and Hold apply it and each seeing what the ones before it recorded; the batch as a whole is not atomic
// (storetest.OpBatcher, what the coalescer's lanes send a laned store). The ops of one slot (all of them on a
// single Redis) are one script call (decide.lua's mode "b"), which reads and writes each key once however many
// of the call's ops touch it: a key's hold records are parsed once and packed once per call. On a cluster the
// slots' calls run concurrently, as a non-atomic DecideBatch's do; the ops of one key share a slot, so they stay
// in order. Stored ops are fenced by revision as checks are (runGroup): a stale copy costs a round trip per
// missed change, a policy Redis no longer holds answers StatusPolicyNotFound (with the zero HoldStatus and
// nothing done), a stored check over the limit in force StatusCostOverLimit (sent as a peek), a stored acquire
// over it StatusCostOverLimit (nothing done). One op's own outcome is its answer, never the batch's error.
func (s *Store) ApplyBatch(ctx context.Context, ops []domain.BucketHold) ([]domain.HoldDecision, error) {
	if len(ops) == 0 {
		return nil, nil
	}
	rs := make([]domain.BucketRequest, len(ops))
	for i := range ops {
		rs[i] = ops[i].BucketRequest
	}
	gs := s.groups(rs)
	out := make([]domain.HoldDecision, len(ops))
	if len(gs) == 1 {
		if err := s.applyGroup(ctx, ops, gs[0], out); err != nil {
			return nil, s.fail("apply batch", err)
		}
		return out, nil
	}
	errs := make([]error, len(gs))
	var wg sync.WaitGroup
	for gi := range gs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[gi] = s.applyGroup(ctx, ops, gs[gi], out)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, s.fail("apply batch", err)
		}
	}
	return out, nil
}

// opSize is the packed size of one op's entry in decide.lua's ARGV[6] but its id's bytes.
const opSize = 1 + 3*8 + 4

// applyGroup runs the ops of g (one slot) in one script call (mode "b") and stores their answers in out. Stored
// ops are bound to the policy copy first, as runGroup binds checks; when the script answers stale it has
// decided and written nothing, the copy is corrected and the ops are sent again, at most maxStale times.
func (s *Store) applyGroup(ctx context.Context, ops []domain.BucketHold, g group, out []domain.HoldDecision) error {
	p := s.pol.Load()
	recordsKey := ""
	if p != nil {
		for _, i := range g.idx {
			if ops[i].Stored {
				recordsKey = p.recordsKey(g.slot)
				break
			}
		}
	}
	for attempt := 0; ; attempt++ {
		checks := make([]byte, 0, len(g.idx)*(checkSize+8))
		packed := make([]byte, 0, len(g.idx)*(opSize+24))
		keys := make([]string, 0, len(g.idx)+1)
		sent := make([]int, 0, len(g.idx)) // positions in g.idx
		reqs := make([]domain.BucketRequest, 0, len(g.idx))
		over := make([]bool, 0, len(g.idx)) // a stored check over the limit in force, sent as a peek
		writes := false
		for j, i := range g.idx {
			q := ops[i]
			r, rev := q.BucketRequest, int64(unchecked)
			if q.Op > domain.OpReleaseAnonymous {
				out[i] = domain.HoldDecision{Decision: domain.Decision{Status: domain.StatusInvalidRule, Limit: r.Limit}, Status: domain.HoldUnknown}
				continue
			}
			isOver := false
			if recordsKey != "" && r.Stored {
				pol, ok := p.held(r.Policy)
				switch {
				case ok:
					r.Rule, rev = pol.Rule(), pol.Revision
					if q.Op == domain.OpCheck && r.Cost > r.Limit {
						isOver, r.Cost = true, 0
					}
				case attempt > 0: // Redis answered that the policy does not exist
					out[i] = domain.HoldDecision{Decision: domain.Decision{Status: domain.StatusPolicyNotFound, Limit: r.Limit}}
					continue
				default:
					rev = -1 // not held: sent with the caller's (provisional) rule, which the script answers stale
				}
			}
			writes = writes || q.Op != domain.OpCheck || r.Cost > 0
			checks = s.appendCheck(checks, r, rev)
			packed = appendOp(packed, q, r)
			keys = append(keys, g.keys[j])
			sent, reqs, over = append(sent, j), append(reqs, r), append(over, isOver)
		}
		if len(sent) == 0 {
			return nil
		}
		withRecords := ""
		if recordsKey != "" {
			keys, withRecords = append(keys, recordsKey), "1"
		}
		v, stale, err := s.exec(ctx, keys, []string{"b", s.instant(), "0", string(checks), withRecords, string(packed)}, writes)
		if err != nil {
			return err
		}
		if stale == nil {
			return readOps(ops, g, sent, reqs, over, v, out)
		}
		if attempt == maxStale {
			return fmt.Errorf("the policies %q changed %d times while one batch was sent", stale[0], maxStale+1)
		}
		if err := p.resolve(ctx, recordsKey, stale); err != nil {
			return err
		}
	}
}

// appendOp appends q's entry of decide.lua's ARGV[6] (mode "b"): the op, its TTL (µs), token_bucket's emission
// time of one unit under r (q + rem/limit µs, the peek a settle, renewal or release answers with) and the id.
func appendOp(b []byte, q domain.BucketHold, r domain.BucketRequest) []byte {
	var eq, er int64
	if r.Algorithm == domain.TokenBucket && r.Limit > 0 {
		w := r.Window.Microseconds()
		eq, er = w/r.Limit, w%r.Limit
	}
	b = append(b, byte(q.Op))
	b = appendDouble(appendDouble(appendDouble(b, int64(q.TTL/time.Microsecond)), eq), er)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(q.ID)))
	return append(b, q.ID...)
}

// readOps turns the script's integers (per sent op: a check's results, a hold op's results+7) into answers.
func readOps(ops []domain.BucketHold, g group, sent []int, reqs []domain.BucketRequest, over []bool, v []int64, out []domain.HoldDecision) error {
	want := 0
	for _, j := range sent {
		want += results
		if ops[g.idx[j]].Op != domain.OpCheck {
			want += 7
		}
	}
	if len(v) != want {
		return fmt.Errorf("%d integers from the script for %d ops, want %d", len(v), len(sent), want)
	}
	for k, j := range sent {
		i := g.idx[j]
		q, r := ops[i], reqs[k]
		if q.Op == domain.OpCheck {
			switch {
			case over[k]:
				out[i] = domain.HoldDecision{Decision: domain.Decision{Status: domain.StatusCostOverLimit, Limit: r.Limit}}
			case v[0] == 4:
				out[i] = domain.HoldDecision{Decision: domain.Decision{Status: domain.StatusPolicyNotFound, Limit: r.Limit}}
			default:
				out[i] = domain.HoldDecision{Decision: decision(r, v[:results])}
			}
			v = v[results:]
			continue
		}
		out[i] = holdDecision(q, r, v[:results+7])
		v = v[results+7:]
	}
	return nil
}

// holdDecision turns a hold op's integers (decide.lua's holdop) into its answer; r is q's check as sent.
func holdDecision(q domain.BucketHold, r domain.BucketRequest, v []int64) domain.HoldDecision {
	var hd domain.HoldDecision
	switch v[0] {
	case 4:
		hd.Decision = domain.Decision{Status: domain.StatusPolicyNotFound, Limit: r.Limit}
	case 5:
		hd.Decision = domain.Decision{Status: domain.StatusCostOverLimit, Limit: r.Limit}
	default:
		dr := r
		if q.Op != domain.OpAcquire {
			dr.Cost = 0
		}
		hd.Decision = decision(dr, v[:results])
	}
	hd.Status, hd.Overdraft = domain.HoldStatus(v[results]), v[results+6]
	if v[results+1] == 1 {
		hd.Hold = domain.Hold{Amount: v[results+2], At: v[results+3], Expires: v[results+4], Settled: v[results+5] == 1}
		if q.Op != domain.OpReleaseAnonymous {
			hd.Hold.ID = q.ID
		}
	}
	return hd
}
