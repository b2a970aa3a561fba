package metrics_test

import (
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/adapters/metrics"
	"github.com/sluice-dev/sluice/adapters/topkeys"
	"github.com/sluice-dev/sluice/domain"
	"github.com/sluice-dev/sluice/domain/clocktest"
)

// sluice_top_denied_keys: at most n series per policy, the most denied keys, labelled by the chosen transform.
func TestTopDeniedKeys(t *testing.T) {
	tr := topkeys.New(nil, clocktest.New(time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)), topkeys.Options{})
	for i, k := range []string{"a", "a", "a", "b", "b", "c", "d"} {
		tr.Decided("login", k, domain.OutcomeDenied)
		if i < 2 {
			tr.Decided("api", "ключ-очень-длинный-ключ-для-проверки", domain.OutcomeDenied)
		}
	}
	tr.Decided("login", "z", domain.OutcomeAllowed) // admissions are not in this metric
	for _, tc := range []struct {
		label metrics.KeyLabel
		want  map[string]float64
	}{
		{metrics.HashedKey, map[string]float64{
			"login/" + metrics.HashedKey("a"): 3, "login/" + metrics.HashedKey("b"): 2,
			"api/" + metrics.HashedKey("ключ-очень-длинный-ключ-для-проверки"): 2,
		}},
		{metrics.TruncatedKey, map[string]float64{"login/a": 3, "login/b": 2, "api/ключ-очень-длинны": 2}},
	} {
		reg := prometheus.NewRegistry()
		if err := metrics.NewTopDeniedKeys(reg, tr, 2, tc.label); err != nil {
			t.Fatal(err)
		}
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]float64{}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				var policy, key string
				for _, l := range m.GetLabel() {
					switch l.GetName() {
					case "policy":
						policy = l.GetValue()
					case "key":
						key = l.GetValue()
					}
				}
				got[policy+"/"+key] = m.GetGauge().GetValue()
			}
		}
		if len(got) != len(tc.want) {
			t.Fatalf("series %v, want %v", got, tc.want)
		}
		for k, v := range tc.want {
			if got[k] != v {
				t.Fatalf("series %v, want %v", got, tc.want)
			}
		}
	}
	if k := metrics.TruncatedKey(strings.Repeat("é", 40)); len(k) > 32 || !strings.HasPrefix(strings.Repeat("é", 40), k) || len(k)%2 != 0 {
		t.Fatalf("truncation cut a rune: %q", k)
	}
}
