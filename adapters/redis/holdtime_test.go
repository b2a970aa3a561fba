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
		c.Do(ctx, c.B().ConfigSet().ParameterValue().ParameterValue("slowlog-log-slower-than", "10000").Build())
		c.Do(ctx, c.B().Flushall().Build())
		s.Close()
	}
}
