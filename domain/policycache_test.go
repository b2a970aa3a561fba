package domain

import (
	"context"
	"errors"
	"testing"
)

// The versioned mode of PolicyCache (a store with a version counter of the whole set, Redis): a reload read at an
// older version never replaces a newer copy, a local write applies only as the next version, a record offered by
// a decision is installed at once, and after a data loss any version installs again.
func TestPolicyCacheVersions(t *testing.T) {
	notLoaded := errors.New("not loaded")
	c := NewPolicyCache(notLoaded)
	if err := c.Loaded(context.Background()); err != notLoaded {
		t.Fatalf("Loaded before any install: %v", err)
	}
	a := Policy{Name: "a", Limit: 1, Revision: 5}
	if !c.InstallVersion([]Policy{a}, 5) {
		t.Fatal("first install refused")
	}
	if c.InstallVersion(nil, 4) {
		t.Fatal("a reload read at an older version replaced the copy")
	}
	if p, err := c.Get("a"); err != nil || p.Revision != 5 {
		t.Fatalf("a: %+v %v", p, err)
	}
	b := Policy{Name: "b", Limit: 2, Revision: 7}
	if c.ApplyVersion(7, "b", &b) {
		t.Fatal("a local write two versions ahead was applied (a change in between is missing)")
	}
	b.Revision = 6
	if !c.ApplyVersion(6, "b", &b) {
		t.Fatal("the next version was not applied")
	}
	if v, _ := c.Version(); v != 6 {
		t.Fatalf("version %d, want 6", v)
	}
	if !c.ApplyVersion(7, "a", nil) {
		t.Fatal("a removal at the next version was not applied")
	}
	if _, err := c.Get("a"); !errors.Is(err, ErrPolicyNotFound) {
		t.Fatalf("a after its removal: %v", err)
	}
	c.Offer("z", &Policy{Name: "z", Limit: 9, Revision: 40})
	if p, ok := c.Held("z"); !ok || p.Revision != 40 {
		t.Fatalf("offered record not held: %+v", p)
	}
	if v, _ := c.Version(); v != 7 {
		t.Fatalf("an offered record moved the version to %d", v)
	}
	held := c.ForgetVersion()
	if len(held) != 2 || held[0].Name != "b" || held[1].Name != "z" {
		t.Fatalf("ForgetVersion returned %+v", held)
	}
	if !c.InstallVersion([]Policy{{Name: "n"}}, 1) {
		t.Fatal("after a data loss a low version was refused")
	}
	if ps, _ := c.List(); len(ps) != 1 || ps[0].Name != "n" {
		t.Fatalf("after the loss the copy is %+v", ps)
	}
}
