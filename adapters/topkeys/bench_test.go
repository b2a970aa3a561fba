package topkeys_test

import (
	"strconv"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/topkeys"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// BenchmarkDecided is the tracker's cost per decision (it sits on the decision path, in front of the metrics
// observer): 10,000 distinct keys of one policy from GOMAXPROCS goroutines, so most decisions replace a counter.
func BenchmarkDecided(b *testing.B) {
	tr := topkeys.New(nil, clocktest.New(time.Unix(1_700_000_000, 0)), topkeys.Options{})
	keys := make([]string, 10000)
	for i := range keys {
		keys[i] = "user-" + strconv.Itoa(i)
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			tr.Decided("login", keys[i%len(keys)], domain.OutcomeAllowed)
			i++
		}
	})
}
