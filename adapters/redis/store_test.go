package redis_test

import (
	"context"
	"testing"
	"time"

	"github.com/redis/rueidis"

	"github.com/sluice-dev/sluice/adapters/coalesce"
	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/storetest"
)

// open returns a store on addrs with its own key prefix, reading clock (nil: the server's clock).
func open(t testing.TB, addrs []string, clock domain.Clock, o redis.Options) *redis.Store {
	t.Helper()
	o.Addrs, o.Prefix, o.Clock = addrs, redistest.Prefix(), clock
	if o.Timeout == 0 {
		o.Timeout = 5 * time.Second // the race tests run many goroutines on 2 busy cores
	}
	s, err := redis.Open(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

func TestConformanceSingle(t *testing.T) {
	addr := redistest.SingleAddr(t)
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		return open(t, []string{addr}, clock, redis.Options{})
	})
}

func TestConformanceCluster(t *testing.T) {
	addrs := redistest.ClusterAddrs(t)
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		s := open(t, addrs[:1], clock, redis.Options{}) // one seed: the client finds the rest
		if !s.Cluster() {
			t.Fatal("the client did not detect the cluster")
		}
		return s
	})
}

// Through Sentinel: the seeds are Sentinels and master_set names the master; the client asks them for it.
func TestConformanceSentinel(t *testing.T) {
	master := redistest.StartServer(t)
	sentinel := redistest.StartSentinel(t, master.Addr)
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		s := open(t, []string{sentinel}, clock, redis.Options{MasterSet: "sluice"})
		if m := s.Client().Mode(); m != rueidis.ClientModeSentinel {
			t.Fatalf("client mode %s, want sentinel", m)
		}
		return s
	})
}

// The coalescer's lanes carry hold ops to the store in mixed batches (app/redis.go puts them in front of it).
var _ coalesce.OpBatcher = (*redis.Store)(nil)
