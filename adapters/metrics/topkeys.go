package metrics

import (
	"crypto/sha256"
	"encoding/hex"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluice-dev/sluice/adapters/topkeys"
)

// TopKeySource is what the top denied keys metric reads (adapters/topkeys.Tracker).
type TopKeySource interface {
	Policies() []string
	Top(policy string, by topkeys.By, n int) ([]topkeys.Entry, time.Duration)
}

// KeyLabel turns a key into the value of the metric's key label.
type KeyLabel func(key string) string

// HashedKey is the first 16 hex digits of the key's SHA-256: the same key gives the same label on every replica
// (sum them) and the key is not written out; GET /v1/policies/{name}/top names it to an admin. A key drawn from a
// small set (an IPv4 address, a user number) can be found again by hashing every candidate: this hides keys from
// a casual reader of the metrics, not from a determined one.
func HashedKey(key string) string {
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:8])
}

// TruncatedKey is the key's first 32 bytes (cut at a UTF-8 boundary): readable, for keys that are not secrets.
func TruncatedKey(key string) string {
	if len(key) <= 32 {
		return key
	}
	cut := 32
	for cut > 0 && key[cut]&0xC0 == 0x80 { // inside a multi-byte rune
		cut--
	}
	return key[:cut]
}

// topDenied is sluice_top_denied_keys: at each scrape, per tracked policy, its n keys with the most denials over
// the top keys' interval. At most n series per policy (and 1024 policies), whatever the number of keys.
type topDenied struct {
	src   TopKeySource
	n     int
	label KeyLabel
	desc  *prometheus.Desc
}

// NewTopDeniedKeys registers sluice_top_denied_keys{policy, key} on reg: the n keys of each policy with the most
// denials, labelled by label. Off unless the operator asks (metrics.top_denied_keys): keys are unbounded, this is not.
func NewTopDeniedKeys(reg prometheus.Registerer, src TopKeySource, n int, label KeyLabel) error {
	return reg.Register(&topDenied{src: src, n: n, label: label, desc: prometheus.NewDesc(
		"sluice_top_denied_keys",
		"Denials (shadow denials included) of each policy's most denied keys over the last 5-10 minutes on this replica, from the top keys' summary (each count overestimates by at most N/64); key is hashed or truncated as configured.",
		[]string{"policy", "key"}, nil)})
}

func (t *topDenied) Describe(ch chan<- *prometheus.Desc) { ch <- t.desc }

func (t *topDenied) Collect(ch chan<- prometheus.Metric) {
	for _, p := range t.src.Policies() {
		entries, _ := t.src.Top(p, topkeys.ByDenied, t.n)
		seen := map[string]bool{}
		for _, e := range entries {
			l := t.label(e.Key)
			if seen[l] { // two keys truncated alike: the first (larger) count stands
				continue
			}
			seen[l] = true
			ch <- prometheus.MustNewConstMetric(t.desc, prometheus.GaugeValue, float64(e.Count), p, l)
		}
	}
}
