package memory_test

import (
	"testing"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/storetest"
)

// FuzzStore is the shared store fuzz target (storetest.Fuzz): random programs of checks, batches and policy
// changes, every decision compared with domain.Bucket's.
func FuzzStore(f *testing.F) {
	storetest.Fuzz(f, func(_ testing.TB, clock domain.Clock) domain.BucketStore {
		return memory.New(clock, memory.Options{MaxKeys: 1 << 20})
	})
}
