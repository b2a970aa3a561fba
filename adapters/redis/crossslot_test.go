package redis_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// An atomic multi-check across slots of the cluster that one slot refuses leaves the other slots exactly as if it
// had never run: after the undo, every later decision of the reserved key equals the domain's step on a bucket
// that never saw the batch (every algorithm, a reservation on a key that already holds units).
func TestCrossSlotAtomicUndo(t *testing.T) {
	clock := clocktest.New(epoch)
	var logs syncBuffer
	s := open(t, redistest.ClusterAddrs(t)[:1], clock, redis.Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	ctx := context.Background()
	t.Cleanup(func() {
		// Every undo succeeded (the script answers an array, as every call): none was left to expire.
		if out := logs.String(); strings.Contains(out, "could not undo") {
			t.Errorf("an undo failed:\n%s", out)
		}
	})
	// The refused check's slot comes after the reserved key's, so the reserved slot is decided (and recorded)
	// first and must be undone.
	spent := domain.BucketRequest{Policy: "spent", Rule: rule(domain.FixedWindow, 1, time.Hour), Cost: 1}
	for i := 0; spent.Key == "" && i < 1_000_000; i++ {
		if k := fmt.Sprint("other", i); redis.Slot(s.Key("spent", k)) > redis.Slot(s.Key("p", "reserved")) {
			spent.Key = k
		}
	}
	do(t, s, spent)
	for _, a := range domain.WindowAlgorithms {
		r := domain.BucketRequest{Policy: "p-" + string(a), Key: "reserved", Rule: rule(a, 7, 10*time.Second), Cost: 2}
		if redis.Slot(s.Key(r.Policy, r.Key)) >= redis.Slot(s.Key(spent.Policy, spent.Key)) {
			t.Fatal("the reserved key's slot must come first")
		}
		var ref domain.Bucket
		now := func() int64 { return clock.Now().UnixMicro() }
		want := func(what string, got domain.Decision, r domain.BucketRequest) {
			t.Helper()
			if w := ref.Decide(now(), r.Rule, r.Cost); got != w {
				t.Fatalf("%s %s:\n got %+v\nwant %+v", a, what, got, w)
			}
		}
		want("first", do(t, s, r), r)
		clock.Advance(1500 * time.Millisecond)
		for i := range 3 {
			ds, err := s.DecideBatch(ctx, []domain.BucketRequest{r, spent}, true)
			if err != nil {
				t.Fatal(err)
			}
			if !ds[0].Allowed || ds[1].Allowed {
				t.Fatalf("%s: batch %d decisions: %+v", a, i, ds)
			}
			clock.Advance(700 * time.Millisecond)
		}
		for i := range 12 {
			c := r
			c.Cost = int64(i % 3)
			want(fmt.Sprintf("check %d after the undone batches", i), do(t, s, c), c)
			clock.Advance(900 * time.Millisecond)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the store's concurrent log lines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
