package coalesce

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/storetest"
)

// TestConformanceRedis runs the conformance suite over a single Redis wrapped by the coalescer in lane mode, as
// `sluice serve` wires it (redis.lanes; a cluster is not laned). Every laned batch is one script call holding
// checks of several keys. It skips without the test Redis (fails under CI=true).
func TestConformanceRedis(t *testing.T) {
	addr := redistest.SingleAddr(t)
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		s, err := redis.Open(context.Background(), redis.Options{Addrs: []string{addr}, Prefix: redistest.Prefix(), Clock: clock, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return New(s, Options{Lanes: 4, MaxBatch: 64})
	})
}
