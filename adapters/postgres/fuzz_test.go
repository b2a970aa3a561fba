package postgres_test

import (
	"testing"

	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/storetest"
)

// FuzzStore is the shared store fuzz target (storetest.Fuzz) on a database of its own: random programs of checks,
// batches and policy changes through the store's statements, every decision compared with domain.Bucket's.
func FuzzStore(f *testing.F) {
	storetest.Fuzz(f, func(tb testing.TB, clock domain.Clock) domain.BucketStore {
		return open(tb, postgres.Options{Clock: clock})
	})
}
