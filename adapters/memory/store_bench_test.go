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

// BenchmarkBytesPerKey measures the memory held per live key whose window holds limit units admitted at limit
// distinct instants (the worst case of the exact log: one entry per unit). Each iteration fills one more key;
// the heap is measured after a GC before and after, and reported as B/key (bytes of live heap per key, the
// store's map, buckets, rings and key strings included). ns/op is the time to fill one key.
func BenchmarkBytesPerKey(b *testing.B) {
	for _, limit := range []int64{100, 1000} {
		b.Run("limit="+strconv.FormatInt(limit, 10), func(b *testing.B) {
			clock := &stepClock{step: time.Microsecond}
			s := memory.New(clock, memory.Options{MaxKeys: 10_000_000})
			ctx := context.Background()
			// Keys of the uniform shape's form; the strings are built before the first measurement.
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
				r := domain.BucketRequest{Policy: "bench", Key: keys[n], Rule: domain.Rule{Algorithm: domain.SlidingLog, Limit: limit, Window: time.Hour}, Cost: 1}
				for u := int64(0); u < limit; u++ {
					if d, err := s.Decide(ctx, r); err != nil || !d.Allowed {
						b.Fatal(d, err)
					}
				}
				n++
			}
			b.StopTimer()
			after := heapInUse()
			keyBytes := 0
			for _, k := range keys[:n] {
				keyBytes += len(k)
			}
			// The key strings belong to the caller here, but a store holds its own copy: count them in.
			b.ReportMetric(float64(after-before)/float64(n), "B/key")
			b.ReportMetric(float64(after-before)/float64(n*int(limit)), "B/unit")
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
