package app

import (
	"os"
	"regexp"
	"testing"
)

// TestChartStoreCapabilities: the Helm chart's table of store capabilities (templates/_stores.tpl, read by its
// autoscaling check and its NOTES) is the driver rows' Shared and AtomicAcrossKeys, store for store.
func TestChartStoreCapabilities(t *testing.T) {
	b, err := os.ReadFile("../deploy/helm/sluice/templates/_stores.tpl")
	if err != nil {
		t.Fatal(err)
	}
	row := regexp.MustCompile(`(?m)^([a-z]+): \{shared: (true|false), atomicAcrossKeys: (true|false)\}$`)
	chart := map[string][2]string{}
	for _, m := range row.FindAllStringSubmatch(string(b), -1) {
		chart[m[1]] = [2]string{m[2], m[3]}
	}
	if len(chart) != len(storeDrivers) {
		t.Errorf("the chart lists %d stores, app/stores.go %d", len(chart), len(storeDrivers))
	}
	str := func(b bool) string {
		if b {
			return "true"
		}
		return "false"
	}
	for _, d := range storeDrivers {
		got, ok := chart[d.Name]
		want := [2]string{str(d.Shared), str(d.AtomicAcrossKeys)}
		if !ok || got != want {
			t.Errorf("store %s: chart says shared, atomicAcrossKeys = %v (listed: %v); the driver row says %v", d.Name, got, ok, want)
		}
	}
}
