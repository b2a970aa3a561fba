package domain

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Algorithm names how a policy counts.
type Algorithm string

// The algorithms (shared/design.md defines each; algorithmTable in domain/algorithm.go lists them with their
// steps, and Algorithms is derived from it).
const (
	// SlidingLog is exact: it keeps the instant of every admitted unit, so any interval of one window holds at
	// most limit units. State: up to limit entries. The default.
	SlidingLog Algorithm = "sliding_log"
	// SlidingWindow is SlidingLog with each unit recorded at its instant rounded up to Resolution: it never
	// over-admits, and its state is bounded by window/resolution + 1 entries whatever the limit.
	SlidingWindow Algorithm = "sliding_window"
	// TokenBucket is GCRA: a bucket of limit units refilled fully in one window; one instant of state.
	TokenBucket Algorithm = "token_bucket"
	// FixedWindow counts units in epoch-aligned windows, as envoyproxy/ratelimit does: one count of state.
	FixedWindow Algorithm = "fixed_window"
	// Concurrency limits units held at once (holds: acquire, then release or let expire); the window is the
	// longest a hold lives unrenewed. State: the key's hold records.
	Concurrency Algorithm = "concurrency"
)

// FailureMode is what a check gets when the store cannot answer in time.
type FailureMode string

const (
	// FailDeny answers with ErrUnavailable (HTTP 503 with Retry-After). The safe default.
	FailDeny FailureMode = "deny"
	// FailAllow admits the request and marks the result Degraded.
	FailAllow FailureMode = "allow"
)

// Source says where a policy was defined.
type Source string

const (
	// SourceConfig policies come from the config file and are read-only over the API.
	SourceConfig Source = "config"
	// SourceAPI policies were created over the API and live in the store.
	SourceAPI Source = "api"
)

// Limits of the contract (shared/design.md).
const (
	MinWindow    = time.Second
	MaxWindow    = 31 * 24 * time.Hour
	MaxKeyBytes  = 512
	maxNameBytes = 64
	// MaxLimit bounds limit and cost: 2^53 - 1, the largest integer every JSON client reads exactly.
	MaxLimit = 1<<53 - 1
	// MinResolution is sliding_window's finest resolution.
	MinResolution = time.Millisecond
	// DefaultResolutions is how many buckets of one window sliding_window uses when no resolution is given.
	DefaultResolutions = 60
)

// Policy is a named limit: at most Limit units per Window for each key.
type Policy struct {
	Name      string
	Limit     int64
	Window    time.Duration
	Algorithm Algorithm
	// Resolution is sliding_window's bucket width (0 = Window/60, at least 1ms); other algorithms have none.
	Resolution time.Duration
	// Period, when set (fixed_window only), counts per calendar period (day, week or month in a time zone, from
	// an anchor) instead of per Window: Window is then the period's Bound (WithDefaults sets it), the longest a
	// period lasts, which the expiry rule and hold deadlines use. Nil: epoch-aligned windows.
	Period      *Calendar
	FailureMode FailureMode
	// Shadow policies decide and count as usual but always admit: for trying a limit on live traffic.
	Shadow bool
	Source Source
	// Floor and Generation are kept by the PolicyStore (API policies) or the PolicyLifecycle (RLS policies), not
	// set by users: see Rule.
	Floor      int64
	Generation int64
	// Revision is the store's version of this policy's record (the Redis store's checks carry it, and the store
	// refuses to decide with another: see adapters/redis); 0 where the store keeps none.
	Revision int64
	// Override is the match of the override whose limit (and window) this policy value carries: set only on the
	// policy PolicyLifecycle.ForKey returns for one key (a Result's), empty when no override applied.
	Override string
	// Metric is the policy label the Observer gets for its decisions; empty: Name. A front end that makes policies
	// per request (the Envoy RLS front end's limit overrides: one per request domain and unit) gives them one
	// shared label, so that no client can add metric series.
	Metric string
}

// metric is p's label for the Observer.
func (p Policy) metric() string {
	if p.Metric != "" {
		return p.Metric
	}
	return p.Name
}

// Rule is what a store needs to decide under p.
func (p Policy) Rule() Rule {
	return Rule{Algorithm: p.Algorithm, Limit: p.Limit, Window: p.Window, Resolution: p.Resolution, Period: p.Period, Floor: p.Floor, Generation: p.Generation}
}

// CountingChanged reports whether p counts units over other spans of time than old: another window, algorithm or
// calendar period (unit, zone or anchor). Such a change raises the policy's floor (NextFloor); a change of limit
// alone does not.
func CountingChanged(old, p Policy) bool {
	return p.Window != old.Window || p.Algorithm != old.Algorithm || !p.Period.Equal(old.Period)
}

// WithDefaults fills the optional fields: sliding_log (fixed_window with a Period) and failure_mode deny; a
// Period's zone (UTC), anchor (DefaultAnchor) and the Window it implies (its Bound).
func (p Policy) WithDefaults() Policy {
	if p.Period != nil {
		c := *p.Period
		if c.Location == nil {
			c.Location = time.UTC
		}
		if c.Anchor.IsZero() {
			c.Anchor = DefaultAnchor(c.Location)
		}
		c.memo = &periodMemo{}
		p.Period = &c
		if p.Window == 0 {
			p.Window = c.Bound()
		}
		if p.Algorithm == "" {
			p.Algorithm = FixedWindow
		}
	}
	if p.Algorithm == "" {
		p.Algorithm = SlidingLog
	}
	if p.FailureMode == "" {
		p.FailureMode = FailDeny
	}
	if row := algorithmRowOf(p.Algorithm); row != nil && row.resolution && p.Resolution == 0 {
		p.Resolution = DefaultResolution(p.Window)
	}
	return p
}

// DefaultResolution is sliding_window's resolution when none is given: window/60, in whole milliseconds, at
// least 1ms.
func DefaultResolution(window time.Duration) time.Duration {
	r := (window / DefaultResolutions).Truncate(time.Millisecond)
	return max(r, MinResolution)
}

// Validate reports every broken rule of p, with field names prefixed by prefix (e.g. "policies[2].").
func (p Policy) Validate(prefix string) error {
	v := &ValidationError{}
	p.validateInto(v, prefix)
	return v.Err()
}

func (p Policy) validateInto(v *ValidationError, prefix string) {
	if err := ValidatePolicyName(p.Name); err != nil {
		v.Add(prefix+"name", err.Error())
	}
	if p.Limit < 1 || p.Limit > MaxLimit {
		v.Add(prefix+"limit", fmt.Sprintf("must be an integer from 1 to 9007199254740991 (2^53-1), got %d", p.Limit))
	}
	switch {
	case p.Period != nil:
		if err := p.Period.Validate(); err != nil {
			v.Add(prefix+"period", err.Error())
		} else if p.Window != p.Period.Bound() {
			v.Add(prefix+"window", "give either a window or a period, not both")
		}
		if p.Algorithm != FixedWindow {
			v.Add(prefix+"period", fmt.Sprintf("a calendar period applies to fixed_window only, not to %s", p.Algorithm))
		}
	case p.Window < MinWindow || p.Window > MaxWindow:
		v.Add(prefix+"window", fmt.Sprintf("must be between 1s and 31d, got %s", FormatDuration(p.Window)))
	}
	if p.Window%time.Millisecond != 0 {
		v.Add(prefix+"window", "must be a whole number of milliseconds")
	}
	switch row := algorithmRowOf(p.Algorithm); {
	case row == nil:
		v.Add(prefix+"algorithm", fmt.Sprintf("must be one of %s, got %q", AlgorithmNames(), p.Algorithm))
	case row.resolution:
		if p.Resolution < MinResolution || p.Resolution > p.Window || p.Resolution%time.Millisecond != 0 {
			v.Add(prefix+"resolution", fmt.Sprintf("must be a whole number of milliseconds from 1ms to the window (%s), got %s", FormatDuration(p.Window), FormatDuration(p.Resolution)))
		}
	case p.Resolution != 0:
		v.Add(prefix+"resolution", fmt.Sprintf("applies to sliding_window only, not to %s", p.Algorithm))
	}
	switch p.FailureMode {
	case FailDeny, FailAllow:
	default:
		v.Add(prefix+"failure_mode", fmt.Sprintf("must be one of [deny allow], got %q", p.FailureMode))
	}
}

// AlgorithmNames lists the algorithms for messages: "sliding_log, sliding_window, token_bucket, fixed_window,
// concurrency".
func AlgorithmNames() string {
	names := make([]string, len(Algorithms))
	for i, a := range Algorithms {
		names[i] = string(a)
	}
	return strings.Join(names, ", ")
}

// ValidatePolicyName checks a name against ^[a-z0-9][a-z0-9_.-]{0,63}$ without a regexp (it is on the hot path).
func ValidatePolicyName(name string) error {
	if len(name) == 0 || len(name) > maxNameBytes {
		return fmt.Errorf("must match ^[a-z0-9][a-z0-9_.-]{0,63}$ (1 to 64 characters), got %d bytes", len(name))
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9':
		case i > 0 && (c == '_' || c == '.' || c == '-'):
		default:
			return fmt.Errorf("must match ^[a-z0-9][a-z0-9_.-]{0,63}$: lower-case letters, digits, and _ . - after the first character; got %q", name)
		}
	}
	return nil
}

// ValidateKey checks that a key is valid UTF-8 of 1 to 512 bytes. Any other content (spaces, slashes, control
// characters, any script) is allowed and stored exactly.
func ValidateKey(key string) error {
	if len(key) == 0 {
		return fmt.Errorf("must not be empty")
	}
	if len(key) > MaxKeyBytes {
		return fmt.Errorf("must be at most %d bytes, got %d", MaxKeyBytes, len(key))
	}
	if !utf8.ValidString(key) {
		return fmt.Errorf("must be valid UTF-8")
	}
	return nil
}

// ParseDuration reads sluice's one duration grammar, the same as openapi.yaml's Duration pattern
// ^([0-9]+d)?([0-9]+h)?([0-9]+m)?([0-9]+s)?([0-9]+ms)?$ (not empty): whole numbers, units in descending order,
// each at most once, e.g. 500ms, 30s, 1h30m, 7d, 1d12h. No fractions ("1.5h"), signs, spaces, exponents or
// units below a millisecond ("1000000us"): what a client may send is exactly what the spec says, and it is
// exactly what FormatDuration writes. Days exist because windows of days are common and Go has no day unit.
func ParseDuration(s string) (time.Duration, error) {
	if s == "" {
		return 0, fmt.Errorf("empty duration")
	}
	units := [...]struct {
		name string
		size time.Duration
	}{{"d", 24 * time.Hour}, {"h", time.Hour}, {"m", time.Minute}, {"s", time.Second}, {"ms", time.Millisecond}}
	var total time.Duration
	next := 0 // the index of the largest unit still allowed
	for rest := s; rest != ""; {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		j := i
		for j < len(rest) && rest[j] >= 'a' && rest[j] <= 'z' {
			j++
		}
		k := next
		for k < len(units) && units[k].name != rest[i:j] {
			k++
		}
		if i == 0 || k == len(units) {
			return 0, fmt.Errorf("invalid duration %q: use whole numbers with units d, h, m, s, ms in that order, each at most once, e.g. 500ms, 30s, 5m, 1h30m, 7d", s)
		}
		n, err := strconv.ParseInt(rest[:i], 10, 64)
		if err != nil || time.Duration(n) > (math.MaxInt64-total)/units[k].size {
			return 0, fmt.Errorf("invalid duration %q: too large", s)
		}
		total += time.Duration(n) * units[k].size
		next, rest = k+1, rest[j:]
	}
	return total, nil
}

// FormatDuration writes d in the shortest form ParseDuration reads back: "60s" → "1m", 48h → "2d", 1500ms →
// "1s500ms".
func FormatDuration(d time.Duration) string {
	if d <= 0 {
		return "0s"
	}
	var b strings.Builder
	units := []struct {
		size time.Duration
		name string
	}{{24 * time.Hour, "d"}, {time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}, {time.Millisecond, "ms"}}
	for _, u := range units {
		if n := d / u.size; n > 0 {
			b.WriteString(strconv.FormatInt(int64(n), 10))
			b.WriteString(u.name)
			d -= n * u.size
		}
	}
	if d > 0 {
		b.WriteString(strconv.FormatInt(int64(d), 10))
		b.WriteString("ns")
	}
	return b.String()
}
