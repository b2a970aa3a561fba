package domain

import (
	"encoding/binary"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Fuzz targets for the algorithm and the parsers of the domain. Their seed corpora live in testdata/fuzz and run
// as ordinary tests; scripts/test.d/25-fuzz.sh fuzzes each for a few seconds, docs/reliability.md records longer
// runs.

// FuzzBucketDecide drives a Bucket and the brute-force model of algorithm_test.go with the same sequence of
// checks and requires identical decisions (every field), plus the contract's invariants: each algorithm's bound on
// what one window admits, remaining in [0, limit], retry_after > 0 exactly when denied.
//
// The input is an algorithm, a limit (small, or near the 2^53-1 bound), a window in milliseconds, a resolution in
// milliseconds, and a program: each 3-byte step is (time advance kind, advance amount, cost).
func FuzzBucketDecide(f *testing.F) {
	f.Add(uint8(0), uint64(1), uint32(1000), uint32(0), []byte{0, 0, 1, 0, 0, 1, 1, 0, 1})
	f.Add(uint8(1), uint64(5), uint32(60000), uint32(7000), []byte{0, 0, 2, 3, 10, 3, 3, 200, 1, 1, 0, 5, 2, 7, 0})
	f.Add(uint8(2), uint64(3), uint32(1500), uint32(0), []byte{3, 1, 1, 3, 1, 1, 3, 1, 1, 3, 1, 1, 1, 0, 3})
	f.Add(uint8(3), uint64(12), uint32(1), uint32(0), []byte{2, 255, 12, 0, 0, 0, 3, 3, 6})
	f.Add(uint8(2), uint64(MaxLimit), uint32(2678400000), uint32(0), []byte{0, 0, 255, 0, 0, 255, 1, 0, 1})
	f.Add(uint8(1), uint64(MaxLimit-1), uint32(2678400000), uint32(1), []byte{0, 0, 255, 2, 9, 255, 1, 0, 1})
	f.Fuzz(func(t *testing.T, alg8 uint8, limit64 uint64, windowMs, resMs uint32, prog []byte) {
		alg := WindowAlgorithms[int(alg8)%len(WindowAlgorithms)]
		limit := int64(limit64%MaxLimit) + 1
		window := time.Duration(int64(windowMs)%(us(MaxWindow)/1000-1000)+1000) * time.Millisecond
		var res time.Duration
		if alg == SlidingWindow && resMs > 0 {
			res = time.Duration(int64(resMs)%int64(window/time.Millisecond)+1) * time.Millisecond
		}
		r := ruleFor(alg, limit, window, res)
		if len(prog) > 3*150 {
			prog = prog[:3*150]
		}
		var b Bucket
		var m model
		now := int64(1_700_000_000_000_000)
		for i := 0; i+3 <= len(prog); i += 3 {
			kind, amount, c := prog[i], prog[i+1], prog[i+2]
			switch kind % 4 {
			case 0: // same instant
			case 1: // exactly one window later: the boundary
				now += us(window)
			case 2: // up to two windows, in 1/128ths
				now += us(window) * int64(amount) / 128
			case 3: // small steps, down to one microsecond
				now += int64(amount)
			}
			// Costs: small, or (byte 255) the whole limit, or (254) all but one unit.
			cost := int64(c) % (limit + 1)
			switch c {
			case 255:
				cost = limit
			case 254:
				cost = max(limit-1, 0)
			}
			want := m.decide(now, r, cost)
			got := b.Decide(now, r, cost)
			if got != want {
				t.Fatalf("step %d now %d cost %d rule %+v:\n got %+v\nwant %+v", i/3, now, cost, r, got, want)
			}
			checkFields(t, "step "+strconv.Itoa(i/3), got, r)
		}
		m.checkBound(t, r)
	})
}

// FuzzBucketChanges drives a Bucket through checks and policy changes chosen by the input (limits, windows,
// algorithms, generations, with the floors a policy store sets) and requires every decision's fields to be sane
// and the change bound of change_test.go to hold: no sequence of changes lets a key past it.
func FuzzBucketChanges(f *testing.F) {
	f.Add([]byte{0, 3, 2, 1, 4, 0, 0, 7, 1, 2, 3, 1, 0, 4, 4, 4, 0, 1, 2})
	f.Add([]byte{2, 7, 4, 3, 0, 0, 0, 0, 1, 1, 1, 4, 0, 2, 2, 0, 3, 7, 7, 7, 0, 0, 1})
	f.Fuzz(func(t *testing.T, prog []byte) {
		if len(prog) > 2000 {
			prog = prog[:2000]
		}
		pick := picker(prog)
		runChanges(t, 0, len(prog)/3, len(prog)%2 == 1, pick) // odd lengths draw calendar periods too
	})
}

// FuzzBucketRollback checks Mark/Rollback (all-or-nothing multi-checks) for every algorithm, across algorithm
// and generation changes inside a batch: after any checks and a rollback, a peek sees exactly what it saw before.
func FuzzBucketRollback(f *testing.F) {
	f.Add(uint8(4), []byte{0, 1, 1, 2, 9, 3, 0, 4, 4, 1, 255, 0})
	f.Add(uint8(9), []byte{0, 1, 17, 2, 9, 3, 40, 4, 4, 1, 255, 0, 3, 3, 3, 3})
	f.Fuzz(func(t *testing.T, limit8 uint8, prog []byte) {
		limit := int64(limit8%16) + 1
		rule := func(b byte) Rule {
			r := ruleFor(WindowAlgorithms[int(b)%len(WindowAlgorithms)], limit, 10*time.Second, 0)
			r.Generation = int64(b/4) % 2
			return r
		}
		var b Bucket
		now := int64(3_600_000_000)
		for i := 0; i+4 <= len(prog) && i < 4*500; i += 4 {
			now += int64(binary.LittleEndian.Uint16(prog[i:])) * 250
			r := rule(prog[i+2])
			before := b.Decide(now, r, 0)
			mark := b.Mark()
			for j := 0; j < int(prog[i+2]%4); j++ {
				b.Decide(now, rule(prog[i+3]+byte(j)), int64(prog[i+3]+byte(j))%(limit+1))
			}
			if prog[i+3]%2 == 0 {
				b.Rollback(mark)
				if after := b.Decide(now, r, 0); after != before {
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

// FuzzHolds drives holds (acquire, settle, renew, with checks between) on a Bucket and the brute-force model of
// hold_test.go with the same sequence and requires the same answer to every operation.
func FuzzHolds(f *testing.F) {
	f.Add(uint8(0), uint8(5), uint16(10), []byte{2, 3, 1, 4, 0, 7, 2, 1, 5, 6, 3, 3, 2, 8, 1, 4, 0, 2})
	f.Add(uint8(2), uint8(9), uint16(3600), []byte{1, 1, 4, 4, 4, 2, 2, 7, 7, 0, 3, 9, 9, 1, 0, 6, 6, 6})
	f.Fuzz(func(t *testing.T, alg8, limit8 uint8, windowS uint16, prog []byte) {
		alg := Algorithms[int(alg8)%len(Algorithms)]
		if len(prog) > 3000 {
			prog = prog[:3000]
		}
		pick := picker(prog)
		runHolds(t, alg, int64(limit8%16)+1, time.Duration(int64(windowS)%86400+1)*time.Second, len(prog)/2, pick)
	})
}

// picker draws a fuzz target's choices from its input: pick(n) is the next byte modulo n (0 once the input is
// spent, or for n ≤ 1), so every input is a sequence of choices and the fuzzer's mutations change them one by one.
func picker(prog []byte) func(n int) int {
	i := 0
	return func(n int) int {
		if n <= 1 || i >= len(prog) {
			return 0
		}
		i++
		return int(prog[i-1]) % n
	}
}
