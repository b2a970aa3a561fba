package envoyrls

import (
	"strings"
	"testing"
	"unicode/utf8"

	rlcommon "github.com/envoyproxy/go-control-plane/envoy/extensions/common/ratelimit/v3"
	rlsv3 "github.com/envoyproxy/go-control-plane/envoy/service/ratelimit/v3"
	"google.golang.org/protobuf/proto"

	"github.com/sluice-dev/sluice/domain"
)

// FuzzRLSCodec: any bytes either fail to decode as a RateLimitRequest or decode with every string valid UTF-8;
// bytes protobuf accepts decode exactly as protobuf decodes them; escaping keeps valid UTF-8 as it is and never
// maps two byte strings without a backslash to one key.
func FuzzRLSCodec(f *testing.F) {
	valid, _ := proto.Marshal(&rlsv3.RateLimitRequest{Domain: "d", Descriptors: []*rlcommon.RateLimitDescriptor{{Entries: []*rlcommon.RateLimitDescriptor_Entry{{Key: "k", Value: "v"}}}}})
	f.Add(valid, []byte("a\xffb"), []byte("a\xfeb"))
	f.Add([]byte{0x0a, 0x01, 0xff}, []byte("é"), []byte("\xc3"))
	f.Fuzz(func(t *testing.T, data, a, b []byte) {
		var got rlsv3.RateLimitRequest
		if err := (rlsCodec{}).Unmarshal(data, &got); err == nil {
			var want rlsv3.RateLimitRequest
			if proto.Unmarshal(data, &want) == nil && !proto.Equal(&got, &want) {
				t.Fatalf("valid input decoded differently: %v, protobuf says %v", &got, &want)
			}
			if !utf8.ValidString(got.Domain) {
				t.Fatalf("domain %q is not valid UTF-8", got.Domain)
			}
			for _, d := range got.Descriptors {
				for _, e := range d.Entries {
					if !utf8.ValidString(e.Key) || !utf8.ValidString(e.Value) {
						t.Fatalf("entry %q=%q is not valid UTF-8", e.Key, e.Value)
					}
				}
			}
		}
		if utf8.Valid(a) && escapeBytes(a) != string(a) {
			t.Fatalf("valid UTF-8 %q escaped to %q", a, escapeBytes(a))
		}
		if string(a) != string(b) && !strings.Contains(string(a)+string(b), `\`) && escapeBytes(a) == escapeBytes(b) {
			t.Fatalf("%q and %q escape to one key %q", a, b, escapeBytes(a))
		}
	})
}

// The names the RLS config makes start with a prefix the domain keeps from API policies (an API policy of the
// same name would share its keys' state).
func TestRLSPolicyNamesAreReserved(t *testing.T) {
	for _, name := range []string{policyName("istio", "PATH=/x"), overridePolicyName("istio", "minute")} {
		reserved := false
		for _, p := range domain.RLSPolicyPrefixes {
			reserved = reserved || strings.HasPrefix(name, p)
		}
		if !reserved {
			t.Fatalf("%q starts with none of %v", name, domain.RLSPolicyPrefixes)
		}
	}
}
