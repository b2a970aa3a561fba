package redis

import (
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/domain"
)

// Every algorithm of the domain's table has its Lua file (algo/<code>_<name>.lua) under the code the table gives
// it (Algorithm.Code, the Go side of the script's checks and values), and the built script has no marker left.
func TestAlgorithmFiles(t *testing.T) {
	for _, a := range domain.Algorithms {
		if algoCode[a] == 0 {
			t.Errorf("no algo/<code>_%s.lua", a)
		} else if algoCode[a] != a.Code() {
			t.Errorf("%s: algo/%d_%s.lua, but the domain's table gives it code %d", a, algoCode[a], a, a.Code())
		}
	}
	if len(algoCode) != len(domain.Algorithms) {
		t.Errorf("algorithm files %v, the domain's table %v", algoCode, domain.Algorithms)
	}
	if i := strings.Index(decideSource, "\n--@"); i >= 0 || markerRE.MatchString(strings.ReplaceAll(decideSource, `"--@"`, "")) {
		t.Errorf("a marker left in the built script")
	}
}
