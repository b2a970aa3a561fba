package domain

import (
	"encoding/binary"
	"regexp"
	"strings"
	"testing"
	"time"
)

// Fuzz targets for the algorithm and the parsers of the domain. Their seed corpora live in testdata/fuzz and run
// as ordinary tests; scripts/test.d/25-fuzz.sh fuzzes each for a few seconds, docs/reliability.md records longer
// runs.

// FuzzLogDecide drives a Log and the brute-force model of slidinglog_test.go with the same sequence of checks
// and requires identical decisions, plus the contract's invariants: every interval of one window holds at most
// limit admitted units, remaining in [0, limit], retry_after > 0 exactly when denied, at most limit entries.
//
// The input is a limit, a window in milliseconds, and a program: each 3-byte step is (time advance kind, advance
// amount, cost).
func FuzzLogDecide(f *testing.F) {
	f.Add(uint8(1), uint16(1000), []byte{0, 0, 1, 0, 0, 1, 1, 0, 1})
	f.Add(uint8(5), uint16(60000), []byte{0, 0, 2, 3, 10, 3, 3, 200, 1, 1, 0, 5, 2, 7, 0})
	f.Add(uint8(3), uint16(1500), []byte{3, 1, 1, 3, 1, 1, 3, 1, 1, 3, 1, 1, 1, 0, 3})
	f.Add(uint8(12), uint16(1), []byte{2, 255, 12, 0, 0, 0, 3, 3, 6})
	f.Fuzz(func(t *testing.T, limit8 uint8, windowMs uint16, prog []byte) {
		limit := int64(limit8%32) + 1
		window := time.Duration(int64(windowMs)%120_000+1) * time.Millisecond
		if len(prog) > 3*200 {
			prog = prog[:3*200]
		}
		var l Log
		var m model
		now := int64(1_700_000_000) * int64(time.Second)
		for i := 0; i+3 <= len(prog); i += 3 {
			kind, amount, c := prog[i], prog[i+1], prog[i+2]
			switch kind % 4 {
			case 0: // same instant
			case 1: // exactly one window later: the boundary
				now += int64(window)
			case 2: // up to two windows, in 1/128ths
				now += int64(window) * int64(amount) / 128
			case 3: // small steps, down to one nanosecond
				now += int64(amount)
			}
			cost := int64(c) % (limit + 1)
			want := m.decide(now, cost, limit, window)
			got := l.Decide(now, cost, limit, window)
			if got != want {
				t.Fatalf("step %d now %d cost %d limit %d window %s:\n got %+v\nwant %+v", i/3, now, cost, limit, window, got, want)
			}
			if got.Allowed != (got.RetryAfter == 0) || got.RetryAfter < 0 {
				t.Fatalf("retry_after %s with allowed=%v", got.RetryAfter, got.Allowed)
			}
			if got.Remaining < 0 || got.Remaining > limit {
				t.Fatalf("remaining %d out of [0, %d]", got.Remaining, limit)
			}
			if got.ResetAfter <= 0 || got.ResetAfter > window {
				t.Fatalf("reset_after %s out of (0, %s]", got.ResetAfter, window)
			}
			if l.Len() > int(limit) {
				t.Fatalf("log holds %d entries for limit %d", l.Len(), limit)
			}
		}
		m.checkInvariant(t, limit, window)
	})
}

// FuzzLogRollback checks Mark/Rollback (all-or-nothing multi-checks): after any checks and a rollback, a peek
// sees exactly what it saw before them.
func FuzzLogRollback(f *testing.F) {
	f.Add(uint8(4), []byte{0, 1, 1, 2, 9, 3, 0, 4, 4, 1, 255, 0})
	f.Fuzz(func(t *testing.T, limit8 uint8, prog []byte) {
		limit := int64(limit8%16) + 1
		const window = 10 * time.Second
		var l Log
		now := int64(time.Hour)
		for i := 0; i+4 <= len(prog) && i < 4*500; i += 4 {
			now += int64(binary.LittleEndian.Uint16(prog[i:])) * int64(time.Millisecond) / 4
			before := l.Decide(now, 0, limit, window)
			mark := l.Mark()
			for j := 0; j < int(prog[i+2]%4); j++ {
				l.Decide(now, int64(prog[i+3]+byte(j))%(limit+1), limit, window)
			}
			if prog[i+3]%2 == 0 {
				l.Rollback(mark)
				if after := l.Decide(now, 0, limit, window); after != before {
					t.Fatalf("step %d: rollback left %+v, want %+v", i/4, after, before)
				}
			}
		}
	})
}

var policyNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_.-]{0,63}$`)

// FuzzValidatePolicyName compares the hand-written name check with the contract's regular expression.
func FuzzValidatePolicyName(f *testing.F) {
	for _, s := range []string{"login", "a", "", "A", "-x", "x-", "a.b_c-d", strings.Repeat("a", 64), strings.Repeat("a", 65), "é", "a\x00", "0", "a b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, name string) {
		err := ValidatePolicyName(name)
		if want := policyNameRE.MatchString(name); (err == nil) != want {
			t.Fatalf("ValidatePolicyName(%q) = %v, regexp says valid=%v", name, err, want)
		}
	})
}

// FuzzParseDuration: whatever parses is non-negative, and FormatDuration writes it back in a form that parses
// to the same duration (for every duration the parser itself can produce from a day count it accepts).
func FuzzParseDuration(f *testing.F) {
	for _, s := range []string{"1s", "1500ms", "1h30m", "7d", "1d12h", "366d", "0s", "-1s", "d", "1d-1h", "31d", "1.5h", "2562047h", "366d2562047h", "1e3s", "+5m", " 1s", "1us", "1ns"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := ParseDuration(s)
		if err != nil {
			return
		}
		if d < 0 {
			t.Fatalf("ParseDuration(%q) = %s, a negative duration without an error", s, d)
		}
		if d > 366*24*time.Hour {
			return // beyond the day count ParseDuration accepts: FormatDuration may write more days than it reads
		}
		back, err := ParseDuration(FormatDuration(d))
		if err != nil || back != d {
			t.Fatalf("ParseDuration(%q) = %s; FormatDuration gives %q, which parses to %s, %v", s, d, FormatDuration(d), back, err)
		}
	})
}

// FuzzValidateKey: a key passes exactly when it is valid UTF-8 of 1 to 512 bytes; every other byte is allowed.
func FuzzValidateKey(f *testing.F) {
	for _, s := range []string{"k", "", "tenant:42", "\x00", "\xff", "a\u202eb", "\r\nX-Evil: 1", strings.Repeat("é", 256), strings.Repeat("x", 513)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, key string) {
		err := ValidateKey(key)
		want := len(key) >= 1 && len(key) <= MaxKeyBytes && utf8Valid(key)
		if (err == nil) != want {
			t.Fatalf("ValidateKey(%q) = %v, want valid=%v", key, err, want)
		}
	})
}

// utf8Valid is utf8.ValidString written another way, so the test does not share the implementation's call.
func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "") == s }
