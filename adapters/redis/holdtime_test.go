package redis

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// TestHoldScriptTime measures Redis's own time per script call (SLOWLOG, threshold 0, on a private redis-server)
// of a check on a key without holds and on one with them, an acquire and a settle, interleaved on 100 keys of each window algorithm that hold what a busy key
// holds in steady state (16 settled records, 2 open), 1 h windows, limits never reached. It goes through Decide
// and Hold only, so the same file measures an older store (copy it into an older checkout).
//
//	SLUICE_TEST_HOLD_TIME=1 go test -run TestHoldScriptTime -v ./adapters/redis/
func TestHoldScriptTime(t *testing.T) {
	if os.Getenv("SLUICE_TEST_HOLD_TIME") == "" {
		t.Skip("set SLUICE_TEST_HOLD_TIME=1 to measure Redis's time per check and hold op")
	}
	srv := redistest.StartServer(t)
	ctx := context.Background()
	for _, a := range domain.Algorithms {
		clk := clocktest.New(time.Unix(1_800_000_000, 0))
		s, err := Open(ctx, Options{Addrs: []string{srv.Addr}, Clock: clk, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		c := s.Client()
		r := domain.Policy{Name: "p", Limit: 1 << 40, Window: time.Hour, Algorithm: a}.WithDefaults().Rule()
		const keys = 100
		hold := func(k int, op domain.HoldOp, id string, amount int64) {
			q := domain.BucketHold{BucketRequest: domain.BucketRequest{Policy: "p", Key: "u" + strconv.Itoa(k), Rule: r, Cost: amount}, Op: op, ID: id}
			if _, err := s.Hold(ctx, q); err != nil {
				t.Fatal(err)
			}
		}
		settleTo := func(n int64) int64 {
			if a.HoldsOnly() {
				return 0
			}
			return n
		}
		seq := 0
		for k := 0; k < keys; k++ {
			for j := 0; j < 18; j++ {
				seq++
				hold(k, domain.OpAcquire, "h"+strconv.Itoa(seq), 2)
				if j < 16 {
					hold(k, domain.OpSettle, "h"+strconv.Itoa(seq), settleTo(1))
				}
				clk.Advance(time.Millisecond)
			}
		}
		c.Do(ctx, c.B().ConfigSet().ParameterValue().ParameterValue("slowlog-log-slower-than", "0").ParameterValue("slowlog-max-len", "100000").Build())
		c.Do(ctx, c.B().SlowlogReset().Build())
		const rounds = 2000
		kinds := []string{"plain check", "check", "acquire", "settle"}
		if a.HoldsOnly() {
			kinds = kinds[2:]
		}
		for i := 0; i < rounds; i++ {
			k := (i * 7) % keys
			if !a.HoldsOnly() {
				// a key without hold records, and then one with them
				if _, err := s.Decide(ctx, domain.BucketRequest{Policy: "c", Key: "u" + strconv.Itoa(k), Rule: r, Cost: 2}); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Decide(ctx, domain.BucketRequest{Policy: "p", Key: "u" + strconv.Itoa(k), Rule: r, Cost: 2}); err != nil {
					t.Fatal(err)
				}
			}
			seq++
			hold(k, domain.OpAcquire, "h"+strconv.Itoa(seq), 2)
			hold(k, domain.OpSettle, "h"+strconv.Itoa(seq), settleTo(1))
			clk.Advance(time.Millisecond)
		}
		entries, err := c.Do(ctx, c.B().SlowlogGet().Count(-1).Build()).ToArray()
		if err != nil {
			t.Fatal(err)
		}
		type e struct{ id, us int64 }
		var es []e
		for _, x := range entries {
			f, _ := x.ToArray()
			id, _ := f[0].AsInt64()
			us, _ := f[2].AsInt64()
			argv, _ := f[3].AsStrSlice()
			if len(argv) > 1 && strings.EqualFold(argv[0], "evalsha") {
				es = append(es, e{id, us})
			}
		}
		sort.Slice(es, func(i, j int) bool { return es[i].id < es[j].id })
		if len(es) != rounds*len(kinds) {
			t.Fatalf("%s: %d SLOWLOG entries, want %d", a, len(es), rounds*len(kinds))
		}
		per := make([][]int64, len(kinds))
		for i, x := range es {
			per[i%len(kinds)] = append(per[i%len(kinds)], x.us)
		}
		var line []string
		for i, k := range kinds {
			xs := per[i]
			sort.Slice(xs, func(a, b int) bool { return xs[a] < xs[b] })
			var sum int64
			for _, x := range xs {
				sum += x
			}
			// the median as well: on a busy machine a call preempted mid-script inflates the mean
			line = append(line, fmt.Sprintf("%s mean %.1f µs p50 %d µs", k, float64(sum)/rounds, xs[len(xs)/2]))
		}
		t.Logf("%s: %s", a, strings.Join(line, ", "))
		if ob, ok := any(s).(interface {
			ApplyBatch(context.Context, []domain.BucketHold) ([]domain.HoldDecision, error)
		}); ok {
			// One hot key as the coalescer's lanes send it: calls of 16 checks against calls of 8 acquires and 8
			// settles (of the acquires of the call before).
			c.Do(ctx, c.B().SlowlogReset().Build())
			op := func(o domain.HoldOp, id string, n int64) domain.BucketHold {
				return domain.BucketHold{BucketRequest: domain.BucketRequest{Policy: "p", Key: "u0", Rule: r, Cost: n}, Op: o, ID: id}
			}
			var prev []string
			for i := 0; i < 400; i++ {
				var checks, holds []domain.BucketHold
				var next []string
				for j := 0; j < 16; j++ {
					checks = append(checks, op(domain.OpCheck, "", 2))
				}
				for j := 0; j < 8; j++ {
					seq++
					id := "h" + strconv.Itoa(seq)
					next = append(next, id)
					holds = append(holds, op(domain.OpAcquire, id, 2))
					if prev != nil {
						holds = append(holds, op(domain.OpSettle, prev[j], settleTo(1)))
					}
				}
				prev = next
				if a.HoldsOnly() {
					for j := range checks {
						checks[j].Cost = 0
					}
				}
				for _, b := range [][]domain.BucketHold{checks, holds} {
					if _, err := ob.ApplyBatch(ctx, b); err != nil {
						t.Fatal(err)
					}
				}
				clk.Advance(time.Millisecond)
			}
			entries, err := c.Do(ctx, c.B().SlowlogGet().Count(-1).Build()).ToArray()
			if err != nil {
				t.Fatal(err)
			}
			es = es[:0]
			for _, x := range entries {
				f, _ := x.ToArray()
				id, _ := f[0].AsInt64()
				us, _ := f[2].AsInt64()
				argv, _ := f[3].AsStrSlice()
				if len(argv) > 1 && strings.EqualFold(argv[0], "evalsha") {
					es = append(es, e{id, us})
				}
			}
			sort.Slice(es, func(i, j int) bool { return es[i].id < es[j].id })
			var cs, hs []int64
			for i, x := range es {
				if i%2 == 0 {
					cs = append(cs, x.us)
				} else if i > 1 {
					hs = append(hs, x.us)
				}
			}
			sort.Slice(cs, func(i, j int) bool { return cs[i] < cs[j] })
			sort.Slice(hs, func(i, j int) bool { return hs[i] < hs[j] })
			t.Logf("%s, hot key batches: 16 checks p50 %d µs, 8 acquires + 8 settles p50 %d µs", a, cs[len(cs)/2], hs[len(hs)/2])
		}
		c.Do(ctx, c.B().ConfigSet().ParameterValue().ParameterValue("slowlog-log-slower-than", "10000").Build())
		c.Do(ctx, c.B().Flushall().Build())
		s.Close()
	}
}
