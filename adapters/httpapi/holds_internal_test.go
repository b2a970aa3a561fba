package httpapi

import (
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/domain"
)

// FuzzHoldHandle: a handle decodes to the parts it was made from, and any string either decodes to parts whose
// handle is that very string (one hold, one handle) or is a validation error naming id; nothing panics.
func FuzzHoldHandle(f *testing.F) {
	f.Add("login", "alice", "job-1", "")
	f.Add("slots", strings.Repeat("κ", 256), strings.Repeat("i", 128), "AAAA")
	f.Add("a", "\x00", "\xff", "AQVsb2dpbgVhbGljZWpvYi0x")
	f.Add("a", "k", "i", "AYEAAWtp") // a length in two bytes where one does
	f.Fuzz(func(t *testing.T, policy, key, id, raw string) {
		if domain.ValidatePolicyName(policy) == nil && domain.ValidateKey(key) == nil && domain.ValidateHoldID(id) == nil {
			h := encodeHandle(policy, key, id)
			ref, err := decodeHandle(h)
			if err != nil || ref != (domain.HoldRef{Policy: policy, Key: key, ID: id}) {
				t.Fatalf("%q %q %q: handle %q decodes to %+v, %v", policy, key, id, h, ref, err)
			}
			if len(h) > 1024 {
				t.Fatalf("handle of %d characters, past HoldHandle's maxLength", len(h))
			}
		}
		ref, err := decodeHandle(raw)
		if err != nil {
			ve, ok := err.(*domain.ValidationError)
			if !ok || len(ve.Fields) != 1 || ve.Fields[0].Field != "id" {
				t.Fatalf("%q: %v, want a validation error naming id", raw, err)
			}
			return
		}
		if got := encodeHandle(ref.Policy, ref.Key, ref.ID); got != raw {
			t.Fatalf("%q decodes to %+v, whose handle is %q", raw, ref, got)
		}
	})
}
