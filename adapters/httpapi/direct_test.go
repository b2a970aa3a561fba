package httpapi

import (
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/memory"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// twinHandlers are two whole HTTP surfaces with their own memory store at the same instant: one serves POST
// /v1/check with directCheck (as NewHandler does), the other with the generated strict handler.
type twinHandlers struct{ direct, generated http.Handler }

func newTwinHandlers(t testing.TB) twinHandlers {
	t.Helper()
	ps := []domain.Policy{
		{Name: "login", Limit: 2, Window: time.Minute},
		{Name: "big", Limit: domain.MaxLimit, Window: time.Hour, Algorithm: domain.TokenBucket},
		{Name: "soft", Limit: 1, Window: time.Minute, FailureMode: domain.FailAllow, Shadow: true},
	}
	handler := func(generated bool) http.Handler {
		clock := clocktest.New(time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC))
		lim, err := domain.NewService(ps, memory.NewPolicies(clock), memory.New(clock, memory.Options{MaxKeys: 1000}), nil, clock)
		if err != nil {
			t.Fatal(err)
		}
		return NewHandler(Options{Limiter: lim, Store: "memory", MaxBodyBytes: 256, generatedCheck: generated})
	}
	return twinHandlers{direct: handler(false), generated: handler(true)}
}

// send sends the same request to both and fails unless status, headers and body agree.
func (h twinHandlers) send(t testing.TB, contentType, body string, chunked bool) (int, string) {
	t.Helper()
	do := func(hd http.Handler) *httptest.ResponseRecorder {
		var r io.Reader = strings.NewReader(body)
		if chunked {
			r = io.MultiReader(r) // no length known: net/http reads it as a chunked body would be
		}
		req := httptest.NewRequest(http.MethodPost, "/v1/check", r)
		if chunked {
			req.ContentLength = -1
		}
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		w := httptest.NewRecorder()
		hd.ServeHTTP(w, req)
		return w
	}
	got, want := do(h.direct), do(h.generated)
	if got.Code != want.Code || !reflect.DeepEqual(got.Header(), want.Header()) || got.Body.String() != want.Body.String() {
		t.Fatalf("body %q (chunked %v):\n direct    %d %v %q\n generated %d %v %q", body, chunked,
			got.Code, got.Header(), got.Body, want.Code, want.Header(), want.Body)
	}
	return got.Code, got.Body.String()
}

// TestDirectCheckMatchesTheGeneratedHandler: POST /v1/check answered by directCheck is the generated strict
// handler's answer, status, headers and body, for admissions, denials, every kind of refused body (empty, white
// space, malformed, unknown or duplicate members, wrong types, invalid UTF-8, bounds, trailing data, too large
// with and without a Content-Length) and unknown policies; in sequence, so the two stores' states stay equal.
func TestDirectCheckMatchesTheGeneratedHandler(t *testing.T) {
	h := newTwinHandlers(t)
	codes, denials := map[int]int{}, 0
	for _, body := range []string{
		`{"policy":"login","key":"k"}`, `{"policy":"login","key":"k","cost":1}`, `{"policy":"login","key":"k"}`,
		`{"policy":"login","key":"k","cost":0}`, ` {"key" : "j", "policy":"login"} ` + "\n",
		`{"policy":"big","key":"k","cost":9007199254740991}`, `{"policy":"big","key":"k","cost":9007199254740992}`,
		`{"policy":"soft","key":"<&>\u2028"}`, `{"policy":"soft","key":"<&>\u2028"}`,
		``, ` `, "\t\r\n ", `null`, `[]`, `{}`, `{"policy":"login"}`, `{"key":"k"}`, `{"policy":"","key":"k"}`,
		`{"policy":"nope","key":"k"}`, `{"policy":"login","key":"k","cost":-1}`, `{"policy":"login","key":"k","cost":1.5}`,
		`{"policy":"login","key":"k","cost":"1"}`, `{"policy":"login","key":"k","extra":1}`, `{"Policy":"login","key":"k"}`,
		`{"policy":"login","policy":"login","key":"k"}`, "{\"policy\":\"login\",\"key\":\"\xff\"}",
		`{"policy":"login","key":"\ud800"}`, `{"policy":"login","key":"k"}{}`, `{"policy":"login","key":"k"} x`,
		`{"policy":"login","key":`, `{"policy":1,"key":true,"cost":{}}`, `{"policy":"login","key":"` + strings.Repeat("k", 300) + `"}`,
	} {
		for _, chunked := range []bool{false, true} {
			code, answer := h.send(t, "application/json", body, chunked)
			codes[code]++
			if code == http.StatusOK && strings.Contains(answer, `"allowed":false`) {
				denials++
			}
		}
	}
	for _, ct := range []string{"text/plain", "", "application/json; charset=utf-8"} {
		code, _ := h.send(t, ct, `{"policy":"login","key":"x"}`, false)
		codes[code]++
	}
	// The cases reach every kind of answer, so the comparison is not of two identical refusals.
	for _, c := range []int{200, 400, 404, 413, 415} {
		if codes[c] == 0 {
			t.Errorf("no case answered %d (answers: %v)", c, codes)
		}
	}
	if denials == 0 {
		t.Errorf("no case was a denial (answers: %v)", codes)
	}
}

// FuzzDirectCheck: on any body, directCheck answers as the generated strict handler does.
func FuzzDirectCheck(f *testing.F) {
	for _, s := range []string{`{"policy":"login","key":"k"}`, `{"policy":"big","key":"k","cost":3}`, ``, ` `, `{"policy":"login","key":"k"} 1`, `{"cost":-0}`} {
		f.Add(s, false)
	}
	h := newTwinHandlers(f)
	f.Fuzz(func(t *testing.T, body string, chunked bool) {
		h.send(t, "application/json", body, chunked)
	})
}
