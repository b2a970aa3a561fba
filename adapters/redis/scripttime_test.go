package redis

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
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

// TestScriptTime measures Redis's own time per call of decide.lua and of the scripts named in
// SLUICE_TEST_SCRIPT_TIME (comma-separated files, e.g. an older decide.lua from git show), interleaved on one
// private redis-server, from its SLOWLOG (threshold 0): per algorithm, 1,000 keys filled with 61 seconds of
// admissions (a sliding_window key then holds 61 entries, ~1 KB), a 1-minute window, then 6,000 admissions in
// calls of 1 and of 6 checks. A script without decide.lua's packed CHECK argument gets the ten arguments per
// check it used to take, one with the CHECK before stored checks (no stored flag, revision or name) gets that. Time is a test clock, so every key's state is the same for every script.
//
//	git show 72c790d:adapters/redis/decide.lua > /tmp/old.lua
//	SLUICE_TEST_SCRIPT_TIME=/tmp/old.lua go test -run TestScriptTime -v ./adapters/redis/
func TestScriptTime(t *testing.T) {
	env := os.Getenv("SLUICE_TEST_SCRIPT_TIME")
	if env == "" {
		t.Skip("set SLUICE_TEST_SCRIPT_TIME to script files (or -) to measure Redis's time per script call")
	}
	names, srcs := []string{"decide.lua"}, []string{decideSource}
	for _, f := range strings.Split(env, ",") {
		if f == "-" || f == "" {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		names, srcs = append(names, f), append(srcs, string(b))
	}
	shas := make([]string, len(srcs))
	for i, src := range srcs {
		h := sha1.Sum([]byte(src))
		shas[i] = hex.EncodeToString(h[:])
	}
	srv := redistest.StartServer(t)
	ctx := context.Background()
	for _, a := range domain.WindowAlgorithms {
		for _, batch := range []int{1, 6} {
			clk := clocktest.New(time.Unix(1_800_000_000, 0))
			s, err := Open(ctx, Options{Addrs: []string{srv.Addr}, Clock: clk, Timeout: 5 * time.Second})
			if err != nil {
				t.Fatal(err)
			}
			c := s.Client()
			r := domain.Policy{Name: "p", Limit: 1 << 40, Window: time.Minute, Algorithm: a}.WithDefaults().Rule()
			const keys = 1000
			// call runs script on the keys ks of policy: by EVAL, or with cached by EVALSHA (what the store sends).
			call := func(script int, policy string, ks []int, cached bool) {
				var kv, args []string
				rs := make([]domain.BucketRequest, len(ks))
				for j, k := range ks {
					rs[j] = domain.BucketRequest{Policy: policy, Key: "u" + strconv.Itoa(k), Rule: r, Cost: 1}
					kv = append(kv, s.Key(rs[j].Policy, rs[j].Key))
				}
				args = []string{"d", s.now(), "0"}
				if strings.Contains(srcs[script], "local CHECK = '<BdddddBddBdss'") {
					var b []byte
					for _, rq := range rs {
						b = s.appendCheck(b, rq, unchecked)
					}
					args = append(args, string(b), "")
				} else if strings.Contains(srcs[script], "local CHECK =") {
					// The CHECK before stored checks: no stored flag, revision or name.
					var b []byte
					for _, rq := range rs {
						c := s.appendCheck(nil, rq, unchecked)
						b = append(append(b, c[:58]...), c[67:len(c)-1]...)
					}
					args = append(args, string(b))
				} else {
					for _, rq := range rs {
						args = append(args, tenArgs(rq)...)
					}
				}
				cmd := c.B().Eval().Script(srcs[script]).Numkeys(int64(len(kv))).Key(kv...).Arg(args...).Build()
				if cached {
					cmd = c.B().Evalsha().Sha1(shas[script]).Numkeys(int64(len(kv))).Key(kv...).Arg(args...).Build()
				}
				if err := c.Do(ctx, cmd).Error(); err != nil {
					t.Fatal(err)
				}
			}
			for sec := 0; sec < 61; sec++ { // the same states for every script: one policy name each
				for i := range srcs {
					for k := 0; k < keys; k += 50 {
						ks := make([]int, 50)
						for j := range ks {
							ks[j] = k + j
						}
						call(0, "p"+strconv.Itoa(i), ks, false)
					}
				}
				clk.Advance(time.Second)
			}
			clk.Advance(-time.Second + time.Millisecond)
			for i := range srcs { // from here on EVALSHA finds every script cached
				if err := c.Do(ctx, c.B().ScriptLoad().Script(srcs[i]).Build()).Error(); err != nil {
					t.Fatal(err)
				}
			}
			if err := c.Do(ctx, c.B().ConfigSet().ParameterValue().ParameterValue("slowlog-log-slower-than", "0").ParameterValue("slowlog-max-len", "100000").Build()).Error(); err != nil {
				t.Fatal(err)
			}
			c.Do(ctx, c.B().SlowlogReset().Build())
			for i := 0; i < 6000; i += batch {
				for sc := range srcs {
					ks := make([]int, batch)
					for j := range ks {
						ks[j] = (i + j*7) % keys
					}
					call(sc, "p"+strconv.Itoa(sc), ks, true)
				}
			}
			entries, err := c.Do(ctx, c.B().SlowlogGet().Count(-1).Build()).ToArray()
			if err != nil {
				t.Fatal(err)
			}
			per := map[string][]int64{}
			for _, e := range entries {
				f, _ := e.ToArray()
				us, _ := f[2].AsInt64()
				argv, _ := f[3].AsStrSlice()
				if len(argv) > 1 && strings.EqualFold(argv[0], "evalsha") {
					per[argv[1]] = append(per[argv[1]], us)
				}
			}
			var line []string
			for i, sha := range shas {
				xs := per[sha]
				if len(xs) == 0 {
					t.Fatalf("%s: no SLOWLOG entries", names[i])
				}
				sort.Slice(xs, func(a, b int) bool { return xs[a] < xs[b] })
				var sum int64
				for _, x := range xs {
					sum += x
				}
				line = append(line, fmt.Sprintf("%s mean %.1f µs, p50 %d µs (%d calls)", names[i], float64(sum)/float64(len(xs)), xs[len(xs)/2], len(xs)))
			}
			t.Logf("%s, %d checks per call: %s", a, batch, strings.Join(line, " | "))
			c.Do(ctx, c.B().ConfigSet().ParameterValue().ParameterValue("slowlog-log-slower-than", "10000").Build())
			c.Do(ctx, c.B().Flushall().Build())
			s.Close()
		}
	}
}

// tenArgs is a check as the ten arguments decide.lua took before its packed CHECK argument.
func tenArgs(r domain.BucketRequest) []string {
	return []string{strconv.Itoa(int(algoCode[r.Algorithm])), strconv.FormatInt(r.Limit, 10),
		strconv.FormatInt(r.Window.Microseconds(), 10), strconv.FormatInt(r.Resolution.Microseconds(), 10),
		strconv.FormatInt(r.Floor, 10), strconv.FormatInt(r.Generation, 10), strconv.FormatInt(r.Cost, 10), "0", "0", "0"}
}
