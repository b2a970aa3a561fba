package redis

import (
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/domain"
)

// Every algorithm of the domain's table has its Lua file (algo/<code>_<name>.lua), with the codes decide.lua's
// header lists, and the built script has no marker left.
func TestAlgorithmFiles(t *testing.T) {
	want := map[domain.Algorithm]byte{domain.SlidingLog: 1, domain.SlidingWindow: 2, domain.TokenBucket: 3, domain.FixedWindow: 4}
	for _, a := range domain.Algorithms {
		if algoCode[a] == 0 {
			t.Errorf("no algo/<code>_%s.lua", a)
		}
	}
	for a, c := range want {
		if algoCode[a] != c {
			t.Errorf("%s: code %d, decide.lua's header says %d", a, algoCode[a], c)
		}
	}
	if len(algoCode) != len(domain.Algorithms) {
		t.Errorf("algorithm files %v, the domain's table %v", algoCode, domain.Algorithms)
	}
	if i := strings.Index(decideSource, "\n--@"); i >= 0 || markerRE.MatchString(strings.ReplaceAll(decideSource, `"--@"`, "")) {
		t.Errorf("a marker left in the built script")
	}
}
