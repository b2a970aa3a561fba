package redis_test

import (
	"context"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis"
	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
)

// TestPolicyCost measures what deciding with the policy in force costs (docs/reliability.md quotes it): on a
// cluster, the time PutPolicy takes to write the record into all 16384 slot copies (pipelined); on a single Redis
// and on the cluster, the round-trip time of a stored check (its revision checked against the record in Redis)
// against the same check sent unchecked (a config policy), sequential calls alternating in rounds.
//
//	SLUICE_TEST_POLICY_COST=1 go test -run TestPolicyCost -v ./adapters/redis/
func TestPolicyCost(t *testing.T) {
	if os.Getenv("SLUICE_TEST_POLICY_COST") == "" {
		t.Skip("set SLUICE_TEST_POLICY_COST=1 to measure the policy check's cost")
	}
	for name, addrs := range map[string]func(testing.TB) []string{
		"single":  func(t testing.TB) []string { return []string{redistest.SingleAddr(t)} },
		"cluster": func(t testing.TB) []string { return redistest.ClusterAddrs(t)[:1] },
	} {
		t.Run(name, func(t *testing.T) {
			s := open(t, addrs(t), nil, redis.Options{})
			p := s.NewPolicies(redis.PolicyOptions{})
			defer p.Close()
			ctx := context.Background()
			var puts []time.Duration
			for i := range 5 {
				start := time.Now()
				if _, err := p.PutPolicy(ctx, domain.Policy{Name: "cost", Limit: 1 << 40, Window: time.Minute, Algorithm: domain.SlidingWindow, Resolution: time.Duration(1+i) * time.Second}); err != nil {
					t.Fatal(err)
				}
				puts = append(puts, time.Since(start))
			}
			slices.Sort(puts)
			t.Logf("%s: PutPolicy median %s (min %s, max %s)", name, puts[2], puts[0], puts[4])
			pol, err := p.GetPolicy(ctx, "cost")
			if err != nil {
				t.Fatal(err)
			}
			const rounds, per = 10, 300
			var stored, plain []float64
			for r := range rounds {
				for _, st := range []bool{true, false} {
					start := time.Now()
					for i := range per {
						req := domain.BucketRequest{Policy: "cost", Key: "k" + strconv.Itoa(i), Rule: pol.Rule(), Cost: 1, Stored: st}
						if _, err := s.Decide(ctx, req); err != nil {
							t.Fatal(err)
						}
					}
					us := float64(time.Since(start).Microseconds()) / per
					if st {
						stored = append(stored, us)
					} else {
						plain = append(plain, us)
					}
				}
				_ = r
			}
			slices.Sort(stored)
			slices.Sort(plain)
			t.Logf("%s: one sequential decision, median of %d rounds of %d: stored %.1f µs, unchecked %.1f µs", name, rounds, per, stored[rounds/2], plain[rounds/2])
		})
	}
}
