package httpapi

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/sluice-dev/sluice/api"
)

// FuzzStrictDecoderAgreesWithEncodingJSON: whatever the strict decoder accepts, encoding/json decodes to the
// same value; the strict decoder only refuses more.
func FuzzStrictDecoderAgreesWithEncodingJSON(f *testing.F) {
	for _, s := range []string{
		`{"policy":"login","key":"k","cost":3}`, `{"policy":"login","key":"k","cost":null}`, `{"key":"\u00e9\ud83d\ude00"}`,
		`{"checks":[{"policy":"a","key":"b"},{"policy":"c","key":"d","cost":0}],"atomic":true}`, `{"checks":[]}`,
		`{"limit":5,"window":"1m","algorithm":"token_bucket","failure_mode":"allow","shadow":false,"resolution":"1s"}`,
		`{"policy":"a","policy":"b"}`, `{"Policy":"a"}`, "{\"key\":\"\xff\"}", `{"cost":1.5}`, `[]`, `null`, ` {"key" : "k" } `,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		agree(t, data, new(api.CheckRequest), new(api.CheckRequest))
		agree(t, data, new(api.ChecksRequest), new(api.ChecksRequest))
		agree(t, data, new(api.PolicySpec), new(api.PolicySpec))
	})
}

func agree(t *testing.T, data []byte, strict, loose any) {
	t.Helper()
	if decodeStrict(data, strict) != nil {
		return
	}
	if err := json.Unmarshal(data, loose); err != nil {
		t.Fatalf("strict accepts %q as %T, encoding/json refuses it: %v", data, strict, err)
	}
	if !reflect.DeepEqual(strict, loose) {
		t.Fatalf("%q: strict %+v, encoding/json %+v", data, strict, loose)
	}
}
