package memory_test

import (
	"context"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// stepClock advances by step on every reading, so a benchmark reaches a steady state (entries leave the window
// as fast as they enter it) without reading the wall clock.
type stepClock struct {
	n    atomic.Int64
	step time.Duration
}

func (c *stepClock) Now() time.Time {
	return time.Unix(1_000_000_000, 0).Add(time.Duration(c.n.Add(1)) * c.step)
}

func benchRequests(keys int) []domain.BucketRequest {
	rs := make([]domain.BucketRequest, keys)
	for i := range rs {
		// A window of 10,000 clock readings: ~10,000 instants live over all keys.
		rs[i] = domain.BucketRequest{Policy: "bench", Key: "user:" + strconv.Itoa(i), Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: 1_000_000_000, Window: 10 * time.Second}, Cost: 1}
	}
	return rs
}

// BenchmarkDecide: one goroutine, uniform over 10,000 keys or one hot key, after warm-up.
func BenchmarkDecide(b *testing.B) {
	for _, keys := range []int{10_000, 1} {
		b.Run(shapeName(keys), func(b *testing.B) {
			s := memory.New(&stepClock{step: time.Millisecond}, memory.Options{})
			rs := benchRequests(keys)
			ctx := context.Background()
			for i := 0; i < 100_000; i++ {
				s.Decide(ctx, rs[i%len(rs)])
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := s.Decide(ctx, rs[i%len(rs)]); err != nil {
					b.Fatal(err)
				}
				i++
			}
		})
	}
}

// BenchmarkDecideParallel: GOMAXPROCS goroutines at once; uniform keys spread over the shards, one hot key
// serialises on one shard's mutex.
func BenchmarkDecideParallel(b *testing.B) {
	for _, keys := range []int{10_000, 1} {
		b.Run(shapeName(keys), func(b *testing.B) {
			s := memory.New(&stepClock{step: time.Millisecond}, memory.Options{})
			rs := benchRequests(keys)
			ctx := context.Background()
			for i := 0; i < 100_000; i++ {
				s.Decide(ctx, rs[i%len(rs)])
			}
			var seed atomic.Uint64
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				x := seed.Add(0x9e3779b97f4a7c15)
				for pb.Next() {
					x ^= x << 13
					x ^= x >> 7
					x ^= x << 17
					if _, err := s.Decide(ctx, rs[x%uint64(len(rs))]); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}

// BenchmarkDecideBatch: an atomic multi-check of three keys (of 10,000).
func BenchmarkDecideBatch(b *testing.B) {
	s := memory.New(&stepClock{step: time.Millisecond}, memory.Options{})
	rs := benchRequests(10_000)
	ctx := context.Background()
	for i := 0; i < 100_000; i++ {
		s.Decide(ctx, rs[i%len(rs)])
	}
	batch := make([]domain.BucketRequest, 3)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		for j := range batch {
			batch[j] = rs[(i*3+j*7919)%len(rs)]
		}
		if _, err := s.DecideBatch(ctx, batch, true); err != nil {
			b.Fatal(err)
		}
		i++
	}
}

func shapeName(keys int) string {
	if keys == 1 {
		return "hot"
	}
	return "uniform-" + strconv.Itoa(keys)
}

// BenchmarkBytesPerKey measures the memory held per live key filled to 90 % of its limit over the last hour of a
// 1 h window, for every algorithm: sliding_log at one distinct instant per unit (its worst case: one entry per
// unit, so it grows with the limit), the others at up to 1,000 distinct instants (sliding_window's state is
// bounded by its resolution's buckets, token_bucket's and fixed_window's are one instant and one count). Each
// iteration fills one more key; the heap is measured after a GC before and after and reported as B/key (bytes of
// live heap per key: the store's map, buckets, rings and key strings included). ns/op is the time to fill a key.
func BenchmarkBytesPerKey(b *testing.B) {
	type tc struct {
		alg   domain.Algorithm
		limit int64
	}
	var cases []tc
	for _, limit := range []int64{100, 1000} {
		cases = append(cases, tc{domain.SlidingLog, limit})
	}
	for _, alg := range []domain.Algorithm{domain.SlidingWindow, domain.TokenBucket, domain.FixedWindow} {
		for _, limit := range []int64{100, 10_000, 1_000_000} {
			cases = append(cases, tc{alg, limit})
		}
	}
	for _, c := range cases {
		b.Run(string(c.alg)+"/limit="+strconv.FormatInt(c.limit, 10), func(b *testing.B) {
			clock := clocktest.New(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
			s := memory.New(clock, memory.Options{MaxKeys: 10_000_000})
			ctx := context.Background()
			fill := c.limit * 9 / 10
			steps := min(fill, 1000)
			if c.alg == domain.SlidingLog {
				steps = fill
			}
			rule := domain.Policy{Name: "bench", Limit: c.limit, Window: time.Hour, Algorithm: c.alg}.WithDefaults().Rule()
			keys := make([]string, 0, 1024)
			before := heapInUse()
			n := 0
			for b.Loop() {
				if n == len(keys) {
					b.StopTimer()
					for j := 0; j < 1024; j++ {
						keys = append(keys, "user:"+strconv.Itoa(len(keys)))
					}
					b.StartTimer()
				}
				for u := int64(0); u < steps; u++ {
					cost := fill / steps
					if u == steps-1 {
						cost += fill % steps
					}
					r := domain.BucketRequest{Policy: "bench", Key: keys[n], Rule: rule, Cost: cost}
					if d, err := s.Decide(ctx, r); err != nil || !d.Allowed {
						b.Fatal(d, err)
					}
					clock.Advance(54 * time.Minute / time.Duration(steps)) // the fill spans 90 % of the window
				}
				clock.Advance(-54 * time.Minute) // every key is filled over the same stretch of time
				n++
			}
			b.StopTimer()
			after := heapInUse()
			b.ReportMetric(float64(after-before)/float64(n), "B/key")
			runtime.KeepAlive(s)
			runtime.KeepAlive(keys)
		})
	}
}

func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}
