// Command rls-bench is a closed-loop gRPC load tool for Envoy Rate Limit Service servers: the same tool, requests
// and concurrency against each target in turn (sluice, envoyproxy/ratelimit, ...), reporting decisions per second,
// latency percentiles and, for the processes named with -pid, CPU seconds per decision (from /proc, so server and
// store are counted together). It targets 127.0.0.1 addresses only and stops by itself after -duration per target.
//
//	rls-bench -target sluice=127.0.0.1:8081 -pid sluice=1234 -target upstream=127.0.0.1:9081 -pid upstream=5678,5679 \
//	  -domain bench -key user -keys 1000 -descriptors 1 -hot=false -duration 10s -concurrency 64
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, " ") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

func main() {
	var targets, pids listFlag
	flag.Var(&targets, "target", "name=host:port of an RLS server (repeat; measured in order)")
	flag.Var(&pids, "pid", "name=pid[,pid...]: processes whose CPU counts for target name (server and store)")
	domain := flag.String("domain", "bench", "rate limit domain")
	key := flag.String("key", "user", "descriptor entry key")
	keys := flag.Int("keys", 1000, "distinct entry values (user=u0 ... u<keys-1>), spread round-robin")
	descriptors := flag.Int("descriptors", 1, "descriptors per request, each one check of the request's atomic batch: descriptor j of request i is user=u<(i + j*keys/N) mod keys>, so a request's keys are distinct and requests in flight together share none")
	hot := flag.Bool("hot", false, "prepend a descriptor every request shares (user=hot), as a route-wide limit beside per-user ones")
	duration := flag.Duration("duration", 10*time.Second, "measuring time per target")
	warmup := flag.Duration("warmup", 2*time.Second, "unmeasured load before each target's measurement")
	concurrency := flag.Int("concurrency", 64, "requests in flight")
	conns := flag.Int("conns", 4, "gRPC connections per target")
	flag.Parse()
	if *descriptors < 1 || *descriptors > *keys {
		fail("-descriptors %d: want 1 to -keys (%d)", *descriptors, *keys)
	}
	if len(targets) == 0 {
		fmt.Fprintln(os.Stderr, "rls-bench: give at least one -target name=host:port")
		os.Exit(2)
	}
	cpuPids := map[string][]int{}
	for _, p := range pids {
		name, list, ok := strings.Cut(p, "=")
		if !ok {
			fail("-pid %q: want name=pid[,pid]", p)
		}
		for _, s := range strings.Split(list, ",") {
			n, err := strconv.Atoi(s)
			if err != nil {
				fail("-pid %q: %v", p, err)
			}
			cpuPids[name] = append(cpuPids[name], n)
		}
	}
	fmt.Printf("| target | decisions/s | p50 ms | p99 ms | errors | over_limit | CPU s per 1k decisions |\n|---|---|---|---|---|---|---|\n")
	for _, t := range targets {
		name, addr, ok := strings.Cut(t, "=")
		if !ok {
			fail("-target %q: want name=host:port", t)
		}
		if host, _, err := net.SplitHostPort(addr); err != nil || (host != "127.0.0.1" && host != "localhost") {
			fail("-target %q: load goes to 127.0.0.1 only", t)
		}
		r := run(addr, *domain, *key, *keys, *descriptors, *hot, *concurrency, *conns, *warmup, *duration, cpuPids[name])
		cpu := "n/a"
		if r.cpu >= 0 && r.ok > 0 {
			cpu = fmt.Sprintf("%.3f", r.cpu/float64(r.ok)*1000)
		}
		fmt.Printf("| %s | %.0f | %.2f | %.2f | %d | %d | %s |\n", name, float64(r.ok)/duration.Seconds(), r.p50, r.p99, r.errs, r.over, cpu)
	}
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "rls-bench: "+format+"\n", args...)
	os.Exit(2)
}

type result struct {
	ok, errs, over int64
	p50, p99       float64
	cpu            float64 // seconds, -1 when not measured
}

func run(addr, domain, key string, keys, descriptors int, hot bool, concurrency, conns int, warmup, duration time.Duration, pids []int) result {
	clients := make([]rlsv3.RateLimitServiceClient, conns)
	for i := range clients {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			fail("%s: %v", addr, err)
		}
		defer cc.Close()
		clients[i] = rlsv3.NewRateLimitServiceClient(cc)
	}
	reqs := make([]*rlsv3.RateLimitRequest, keys)
	for i := range reqs {
		reqs[i] = &rlsv3.RateLimitRequest{Domain: domain}
		if hot {
			reqs[i].Descriptors = append(reqs[i].Descriptors, &rlcommon.RateLimitDescriptor{
				Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: key, Value: "hot"}},
			})
		}
		for j := range descriptors {
			reqs[i].Descriptors = append(reqs[i].Descriptors, &rlcommon.RateLimitDescriptor{
				Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: key, Value: "u" + strconv.Itoa((i+j*(keys/descriptors))%keys)}},
			})
		}
	}
	var measuring atomic.Bool
	var ok, errs, over atomic.Int64
	var next atomic.Int64
	lat := make([][]time.Duration, concurrency)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := range concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[w%len(clients)]
			for ctx.Err() == nil {
				req := reqs[int(next.Add(1))%len(reqs)]
				t0 := time.Now()
				resp, err := c.ShouldRateLimit(ctx, req)
				d := time.Since(t0)
				if !measuring.Load() {
					continue
				}
				switch {
				case err != nil:
					if !errors.Is(ctx.Err(), context.Canceled) {
						errs.Add(1)
					}
				default:
					ok.Add(1)
					if resp.OverallCode == rlsv3.RateLimitResponse_OVER_LIMIT {
						over.Add(1)
					}
					lat[w] = append(lat[w], d)
				}
			}
		}()
	}
	time.Sleep(warmup)
	cpu0 := cpuSeconds(pids)
	measuring.Store(true)
	time.Sleep(duration)
	measuring.Store(false)
	cpu1 := cpuSeconds(pids)
	cancel()
	wg.Wait()
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	r := result{ok: ok.Load(), errs: errs.Load(), over: over.Load(), cpu: -1}
	if len(all) > 0 {
		r.p50 = float64(all[len(all)/2]) / 1e6
		r.p99 = float64(all[len(all)*99/100]) / 1e6
	}
	if cpu0 >= 0 && cpu1 >= 0 {
		r.cpu = cpu1 - cpu0
	}
	return r
}

// cpuSeconds sums user and system CPU time of pids from /proc/<pid>/stat (fields 14 and 15, in clock ticks of
// 1/100 s on Linux); -1 when none is given or one cannot be read.
func cpuSeconds(pids []int) float64 {
	if len(pids) == 0 {
		return -1
	}
	var total float64
	for _, p := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(p) + "/stat")
		if err != nil {
			return -1
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+2:])
		if len(f) < 13 {
			return -1
		}
		u, _ := strconv.ParseFloat(f[11], 64)
		k, _ := strconv.ParseFloat(f[12], 64)
		total += (u + k) / 100
	}
	return total
}
