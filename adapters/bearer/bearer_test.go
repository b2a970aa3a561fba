package bearer_test

import (
	"testing"

	"github.com/sluice-dev/sluice/adapters/bearer"
)

func TestRole(t *testing.T) {
	s := bearer.New([]bearer.Token{{Secret: "check-secret-0123", Role: "check"}, {Secret: "admin-secret-0123", Role: "admin"}})
	for _, c := range []struct {
		auth, role string
		ok         bool
	}{
		{"Bearer check-secret-0123", "check", true},
		{"bearer admin-secret-0123", "admin", true},
		{"Bearer  admin-secret-0123 ", "admin", true},
		{"Bearer wrong", "", false},
		{"Basic check-secret-0123", "", false},
		{"check-secret-0123", "", false},
		{"Bearer ", "", false},
		{"", "", false},
	} {
		role, ok := s.Role(c.auth)
		if role != c.role || ok != c.ok {
			t.Errorf("Role(%q) = %q, %v; want %q, %v", c.auth, role, ok, c.role, c.ok)
		}
	}
	if bearer.New(nil).Len() != 0 || s.Len() != 2 {
		t.Error("Len")
	}
}
