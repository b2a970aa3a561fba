package redis_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// TestBytesPerKey measures MEMORY USAGE of one key per algorithm (policy "api", a 12-byte key) at its largest:
// the figures of docs/operator.md's sizing table. It asserts the bound the table states: fixed size for
// token_bucket and fixed_window, 16 bytes per distinct instant for the logs.
//
//	go test -run TestBytesPerKey -v ./adapters/redis/
func TestBytesPerKey(t *testing.T) {
	addr := redistest.SingleAddr(t)
	clock := clocktest.New(epoch)
	s := open(t, []string{addr}, clock, redis.Options{})
	usage := func(key string) int64 {
		n, err := s.Client().Do(context.Background(), s.Client().B().MemoryUsage().Key(s.Key("api", key)).Build()).AsInt64()
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	fill := func(a domain.Algorithm, key string, limit int64, window time.Duration, step time.Duration) {
		for i := int64(0); i < limit; i++ {
			r := domain.BucketRequest{Policy: "api", Key: key, Rule: rule(a, limit, window), Cost: 1}
			if d := do(t, s, r); !d.Allowed {
				t.Fatalf("%s: denied at %d", a, i)
			}
			clock.Advance(step)
		}
	}
	base := map[domain.Algorithm]int64{}
	for i, a := range domain.WindowAlgorithms {
		key := fmt.Sprintf("user:%07d", i) // 12 bytes
		fill(a, key, 1, time.Minute, time.Millisecond)
		base[a] = usage(key)
		t.Logf("%-14s one unit: %d bytes", a, base[a])
	}
	// concurrency: a key is its hold records (decide.lua: 94 bytes per record plus its id and its generation's
	// digits, and 9 to 24 bytes for the section's length and pad).
	conc := rule(domain.Concurrency, 1000, time.Minute)
	for i := range 10 {
		q := domain.BucketHold{BucketRequest: domain.BucketRequest{Policy: "api", Key: "conc", Rule: conc, Cost: 1},
			Op: domain.OpAcquire, ID: fmt.Sprintf("hold-%011d", i)} // 16-byte ids
		if hd, err := s.Hold(context.Background(), q); err != nil || !hd.Allowed {
			t.Fatalf("concurrency: hold %d: %+v %v", i, hd, err)
		}
	}
	t.Logf("concurrency    10 holds: %d bytes", usage("conc"))
	// sliding_log with 100 units at 100 distinct instants; sliding_window with 1000 units over 60 buckets.
	fill(domain.SlidingLog, "log100", 100, time.Minute, 10*time.Millisecond)
	log100 := usage("log100")
	t.Logf("sliding_log    100 distinct instants: %d bytes (%.1f per instant beyond the first)", log100, float64(log100-base[domain.SlidingLog])/99)
	fill(domain.SlidingWindow, "win1000", 1000, time.Minute, 60*time.Millisecond)
	win := usage("win1000")
	t.Logf("sliding_window 1000 units over a whole 1m window (61 buckets at most): %d bytes", win)
	if per := float64(log100-base[domain.SlidingLog]) / 99; per > 20 { // 16 bytes, plus the allocator's size classes
		t.Errorf("sliding_log costs %.1f bytes per instant, want about 16", per)
	}
	if win > base[domain.SlidingWindow]+61*16+64 {
		t.Errorf("sliding_window holds %d bytes, more than 61 buckets", win)
	}
}
