package storetest

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// OpenStore returns a store whose time follows clock, for Fuzz: it is opened once per fuzz target and shared by
// every input (each input uses policy names of its own).
type OpenStore func(tb testing.TB, clock domain.Clock) domain.BucketStore

var fuzzInputs atomic.Int64

// Fuzz is the fuzz target every store runs: a random program of checks, single and batched (atomic or not, of
// one key twice or of two keys), with shadow checks and policy changes (limit, window or algorithm with the floor
// a policy store would set, a new generation) on the way, applied to the store and to domain.Bucket, the reference step
// of every algorithm, and every decision compared field by field. An atomic batch that is refused must record
// nothing, as the reference's Mark/Rollback does.
//
// The input is an algorithm, a limit (small, or near the 2^53-1 bound), a window in milliseconds (1 s to 1 h), a
// resolution in milliseconds, and a program of 4-byte steps: (time advance kind, advance amount, cost, operation).
func Fuzz(f *testing.F, open OpenStore) {
	f.Add(uint8(1), uint64(5), uint32(60000), uint32(0), []byte{0, 0, 1, 0, 2, 1, 1, 4, 0, 0, 255, 5, 1, 0, 1, 0})
	f.Add(uint8(1), uint64(100), uint32(60000), uint32(1000), []byte{3, 7, 3, 0, 2, 5, 9, 0, 2, 40, 1, 4, 1, 0, 2, 0, 2, 128, 1, 6, 0, 0, 1, 13})
	f.Add(uint8(0), uint64(3), uint32(2000), uint32(0), []byte{3, 1, 1, 0, 3, 1, 1, 5, 3, 1, 1, 7, 1, 0, 3, 0, 0, 0, 2, 14})
	f.Add(uint8(2), uint64(7), uint32(5000), uint32(0), []byte{0, 0, 4, 0, 3, 200, 2, 5, 2, 64, 7, 22, 0, 0, 1, 6, 2, 16, 3, 7})
	f.Add(uint8(3), uint64(12), uint32(1000), uint32(0), []byte{2, 255, 12, 0, 0, 0, 3, 4, 1, 0, 6, 6, 0, 0, 13, 5})
	f.Add(uint8(1), uint64(domain.MaxLimit), uint32(3600000), uint32(1), []byte{0, 0, 255, 0, 0, 0, 255, 4, 1, 0, 1, 0, 0, 0, 254, 5})
	f.Add(uint8(0), uint64(domain.MaxLimit-1), uint32(3600000), uint32(0), []byte{0, 0, 254, 0, 3, 9, 1, 0, 0, 0, 255, 7, 0, 0, 1, 14})
	clock := clocktest.New(epoch)
	s := open(f, clock)
	f.Fuzz(func(t *testing.T, alg8 uint8, limit64 uint64, windowMs, resMs uint32, prog []byte) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		alg := domain.WindowAlgorithms[int(alg8)%len(domain.WindowAlgorithms)]
		p := domain.Policy{Name: fmt.Sprintf("fuzz%d", fuzzInputs.Add(1)), Algorithm: alg,
			Limit:  int64(limit64%uint64(domain.MaxLimit)) + 1,
			Window: time.Duration(1000+int64(windowMs)%3_599_001) * time.Millisecond}
		if alg == domain.SlidingWindow && resMs > 0 {
			p.Resolution = time.Duration(int64(resMs)%p.Window.Milliseconds()+1) * time.Millisecond
		}
		p = p.WithDefaults()
		if len(prog) > 4*100 {
			prog = prog[:4*100]
		}
		clock.Set(epoch)
		ref := map[string]*domain.Bucket{}
		bucket := func(key string) *domain.Bucket {
			b := ref[key]
			if b == nil {
				b = &domain.Bucket{}
				ref[key] = b
			}
			return b
		}
		keys := [...]string{"k0", "k1", "k\x00{2}"}
		for i := 0; i+4 <= len(prog); i += 4 {
			kind, amount, c, op := prog[i], prog[i+1], prog[i+2], prog[i+3]
			switch kind % 4 {
			case 0: // same instant
			case 1: // exactly one window later: the boundary
				clock.Advance(p.Window)
			case 2: // up to two windows, in 1/128ths
				clock.Advance(p.Window * time.Duration(amount) / 128)
			case 3: // small steps, down to one millisecond
				clock.Advance(time.Duration(amount) * time.Millisecond)
			}
			now := clock.Now().UnixMicro()
			// Costs: small, or (byte 255) the whole limit, or (254) all but one unit.
			cost := int64(c) % (p.Limit + 1)
			switch c {
			case 255:
				cost = p.Limit
			case 254:
				cost = max(p.Limit-1, 0)
			}
			check := func(key string, cost int64, shadow bool) domain.BucketRequest {
				return domain.BucketRequest{Policy: p.Name, Key: key, Rule: p.Rule(), Cost: cost, Shadow: shadow}
			}
			key := keys[int(op>>3)%len(keys)]
			var rs []domain.BucketRequest
			atomicBatch := false
			switch op % 8 {
			case 0, 1, 2, 3:
				rs = []domain.BucketRequest{check(key, cost, false)}
			case 4: // one key twice, not atomic
				rs = []domain.BucketRequest{check(key, cost, false), check(key, int64(amount)%(p.Limit+1), false)}
			case 5: // one key twice, atomic; the second a shadow check when op's bit 6 is set
				rs = []domain.BucketRequest{check(key, cost, false), check(key, int64(amount)%(p.Limit+1), op&64 != 0)}
				atomicBatch = true
			case 6: // a policy change, as a policy store makes it
				p = changePolicy(p, int(amount%4), int64(c%5)-2, time.Duration(1+int(c)%60)*time.Second,
					domain.WindowAlgorithms[int(c>>3)%len(domain.WindowAlgorithms)], now)
				continue
			case 7: // two keys, atomic
				rs = []domain.BucketRequest{check(key, cost, false), check(keys[(int(op>>3)+1)%len(keys)], int64(amount)%(p.Limit+1), false)}
				atomicBatch = true
			}
			var got []domain.Decision
			if len(rs) == 1 {
				d, err := s.Decide(ctx, rs[0])
				if err != nil {
					t.Fatalf("step %d: Decide(%+v): %v", i/4, rs[0], err)
				}
				got = []domain.Decision{d}
			} else {
				var err error
				if got, err = s.DecideBatch(ctx, rs, atomicBatch); err != nil {
					t.Fatalf("step %d: DecideBatch(%+v, %v): %v", i/4, rs, atomicBatch, err)
				}
			}
			marks := map[string]domain.Mark{}
			refused := false
			for j, r := range rs {
				b := bucket(r.Key)
				if _, ok := marks[r.Key]; !ok {
					marks[r.Key] = b.Mark()
				}
				want := b.Decide(now, r.Rule, r.Cost)
				refused = refused || (!want.Allowed && !r.Shadow)
				if got[j] != want {
					t.Fatalf("step %d check %d of %d (atomic %v) %+v at %d:\n got %+v\nwant %+v", i/4, j, len(rs), atomicBatch, r, now, got[j], want)
				}
			}
			if atomicBatch && refused {
				for k, m := range marks {
					ref[k].Rollback(m)
				}
			}
		}
		// What the store holds at the end, seen by a peek of every key, is the reference's.
		for _, key := range keys {
			r := domain.BucketRequest{Policy: p.Name, Key: key, Rule: p.Rule()}
			d, err := s.Decide(ctx, r)
			if err != nil {
				t.Fatal(err)
			}
			if want := bucket(key).Decide(clock.Now().UnixMicro(), r.Rule, 0); d != want {
				t.Fatalf("final peek of %q:\n got %+v\nwant %+v", key, d, want)
			}
		}
	})
}
