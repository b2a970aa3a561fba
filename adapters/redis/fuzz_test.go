package redis_test

import (
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/storetest"
)

// FuzzStore is the shared store fuzz target (storetest.Fuzz) on the single test Redis: random programs of
// checks, batches and policy changes through decide.lua, every decision compared with domain.Bucket's. Keys
// expire an hour late (ExpirySlack): a program runs in real time while its clock jumps.
func FuzzStore(f *testing.F) {
	addr := redistest.SingleAddr(f)
	storetest.Fuzz(f, func(tb testing.TB, clock domain.Clock) domain.BucketStore {
		return open(tb, []string{addr}, clock, redis.Options{ExpirySlack: time.Hour})
	})
}

// FuzzStoreCluster is the same on the test cluster, where an atomic batch of two keys in different slots is
// reserved slot by slot and undone when refused (decide.lua's undo mode).
func FuzzStoreCluster(f *testing.F) {
	addrs := redistest.ClusterAddrs(f)
	storetest.Fuzz(f, func(tb testing.TB, clock domain.Clock) domain.BucketStore {
		return open(tb, addrs[:1], clock, redis.Options{ExpirySlack: time.Hour})
	})
}
