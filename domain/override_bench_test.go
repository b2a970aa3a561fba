package domain

import (
	"runtime"
	"strconv"
	"testing"
	"time"
)

// BenchmarkOverrideRule: the rule of a key under a policy with no overrides and with 10^6 (half exact keys, half
// prefixes of two lengths), the key hitting an exact override, a prefix or none; and the memory one override
// takes (B/override) and the time one Put takes while building the set (ns/put). Run:
// go test -run '^$' -bench BenchmarkOverrideRule -benchtime 2000000x ./domain
func BenchmarkOverrideRule(b *testing.B) {
	p := Policy{Name: "api", Limit: 1000, Window: time.Hour, Algorithm: SlidingWindow}.WithDefaults()
	empty := NewOverrideSet(p)
	b.Run("none", func(b *testing.B) {
		for b.Loop() {
			empty.Rule("tenant:123456:user:9")
		}
	})
	const n = 1_000_000
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	big := NewOverrideSet(p)
	now := int64(1_700_000_000_000_000)
	start := time.Now()
	for i := range n / 2 {
		big.Put(Override{Match: "tenant:" + strconv.Itoa(i), Limit: 10}, now)
		if i%2 == 0 {
			big.Put(Override{Match: "org:" + strconv.Itoa(i) + ":*", Limit: 100, Window: 2 * time.Hour}, now)
		} else {
			big.Put(Override{Match: "team:" + strconv.Itoa(i) + ":*", Limit: 50}, now)
		}
	}
	build := time.Since(start)
	runtime.GC()
	runtime.ReadMemStats(&after)
	perOverride := float64(after.HeapAlloc-before.HeapAlloc) / n
	for _, c := range []struct{ name, key string }{
		{"1e6/exact", "tenant:123456"},
		{"1e6/prefix", "org:123456:user:9"},
		{"1e6/miss", "user:123456"},
	} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				big.Rule(c.key)
			}
			b.ReportMetric(perOverride, "B/override")
			b.ReportMetric(float64(build.Nanoseconds())/n, "ns/put")
		})
	}
	runtime.KeepAlive(big)
}
