package coalesce

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/postgres"
	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/storetest"
)

// TestConformancePostgres runs the conformance suite over the Postgres store wrapped by the coalescer in lane mode,
// as `sluice serve` wires it (key mode differs only in how checks are grouped, and is covered over the memory
// store). It skips without a database (fails under CI=true).
func TestConformancePostgres(t *testing.T) {
	storetest.Run(t, func(t *testing.T, clock domain.Clock) domain.BucketStore {
		s, err := postgres.Open(context.Background(), postgres.Options{URL: pgtest.NewDatabase(t), Clock: clock, StatementTimeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(s.Close)
		return New(s, Options{Lanes: 4})
	})
}
