package redis

import (
	"context"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/redis/redistest"
	"github.com/sluice-dev/sluice/domain"
)

// On a cluster, a slot's copy of the policy records that is missing (its master lost data) or behind the
// policies hash (a change whose copies failed half way, a lagging replica promoted) is repaired from the hash by
// the first check that finds it so, and the check decides with the policy in force; a deletion removes the record
// from every slot's copy.
func TestSlotCopyRepaired(t *testing.T) {
	addrs := redistest.ClusterAddrs(t)
	prefix := redistest.Prefix()
	ctx := context.Background()
	var ps []*Policies
	var ss []*Store
	for range 2 {
		s, err := Open(ctx, Options{Addrs: addrs[:1], Prefix: prefix, Timeout: 5 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		p := s.NewPolicies(PolicyOptions{Refresh: time.Minute})
		t.Cleanup(func() { p.Close(); s.Close() })
		ss, ps = append(ss, s), append(ps, p)
	}
	a := ps[0]
	if _, err := a.PutPolicy(ctx, domain.Policy{Name: "p", Limit: 10, Window: time.Hour}); err != nil {
		t.Fatal(err)
	}
	old, err := a.c.Do(ctx, a.c.B().Hget().Key(a.hash).Field("p").Build()).ToString()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.PutPolicy(ctx, domain.Policy{Name: "p", Limit: 3, Window: time.Hour}); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store, p *Policies, key string) domain.Decision {
		t.Helper()
		pol, err := p.CheckPolicy(ctx, "p")
		if err != nil {
			t.Fatal(err)
		}
		d, err := s.Decide(ctx, domain.BucketRequest{Policy: "p", Key: key, Rule: pol.Rule(), Cost: 1, Stored: true})
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	// Missing: the copy of the slot of "gone" is deleted.
	gone := a.copyKey(Slot(ss[1].Key("p", "gone")))
	if err := a.c.Do(ctx, a.c.B().Del().Key(gone).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	// Behind: the copy of the slot of "behind" holds the record of limit 10 again.
	behind := a.copyKey(Slot(ss[1].Key("p", "behind")))
	if err := a.c.Do(ctx, a.c.B().Hset().Key(behind).FieldValue().FieldValue("p", old).Build()).Error(); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"gone", "behind"} {
		admitted := 0
		for i := range 10 {
			s, p := ss[i%2], ps[i%2]
			if check(s, p, key).Allowed {
				admitted++
			}
		}
		if admitted != 3 {
			t.Errorf("key %q: %d admitted, want 3 (the limit in force)", key, admitted)
		}
	}
	for _, k := range []string{gone, behind} {
		rec, err := a.c.Do(ctx, a.c.B().Hget().Key(k).Field("p").Build()).ToString()
		if err != nil || rec == old {
			t.Errorf("slot copy %s not repaired: %q %v", k, rec, err)
		}
	}
	// A deletion leaves nothing behind in any slot's copy.
	if err := a.DeletePolicy(ctx, "p"); err != nil {
		t.Fatal(err)
	}
	for _, sl := range []uint16{0, 1, 8191, 16383, Slot(ss[1].Key("p", "gone"))} {
		if n, err := a.c.Do(ctx, a.c.B().Hlen().Key(a.copyKey(sl)).Build()).AsInt64(); err != nil || n != 0 {
			t.Errorf("slot %d's copy holds %d records after the deletion (%v)", sl, n, err)
		}
	}
	if d := check(ss[1], ps[1], "gone"); d.Status != domain.StatusPolicyNotFound {
		t.Errorf("a check of the deleted policy: %+v", d)
	}
}
