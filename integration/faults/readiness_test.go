package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
)

// TestReadinessThroughAPostgresOutage, with a real database: a replica that has seen PostgreSQL answer stays
// ready through an outage (status degraded), so its checks keep their failure_mode, config and API policies
// alike; /healthz/store says the store is down; neither names the database's address. A replica started during
// the outage is not ready (it cannot know the API policies), and becomes ready when the database returns.
func TestReadinessThroughAPostgresOutage(t *testing.T) {
	cluster := pgtest.StartCluster(t)
	url := pgtest.NewDatabaseOn(t, cluster.URL())
	cfg := writeConfig(t, t.TempDir(), faultPolicies)
	first := startSluice(t, "first", cfg, pgEnv(url)...)
	c := &http.Client{Timeout: 10 * time.Second}
	ctx := context.Background()
	if st, body := call(t, c, "PUT", first.base+"/v1/policies/api-open", `{"limit":5,"window":"1h","failure_mode":"allow"}`); st != 201 {
		t.Fatalf("PUT api-open: %d %s", st, body)
	}
	// The cache of API policies reloads in the background: wait until this replica decides under api-open.
	waitFor(t, func() bool { return check(ctx, c, first.base, "", "api-open", "k").status == 200 })

	cluster.Stop()
	addr := strconv.Itoa(cluster.Port())
	st, body := call(t, c, "GET", first.base+"/readyz", "")
	if st != 200 || !strings.Contains(body, `"status":"degraded"`) || !strings.Contains(body, `"store_status":"unavailable"`) {
		t.Fatalf("/readyz of a replica that has seen the store, during the outage: %d %s", st, body)
	}
	if st, body := call(t, c, "GET", first.base+"/healthz/store", ""); st != 503 || !strings.Contains(body, "store-unavailable") || strings.Contains(body, addr) {
		t.Fatalf("/healthz/store during the outage: %d %s (the port %s must not appear)", st, body, addr)
	}
	for _, p := range []string{"open", "api-open"} {
		if o := check(ctx, c, first.base, "", p, "outage"); o.status != 200 || !o.allowed || !o.degraded {
			t.Fatalf("%s (failure_mode allow) during the outage: %+v", p, o)
		}
	}
	if o := check(ctx, c, first.base, "", "closed", "outage"); o.status != 503 {
		t.Fatalf("closed (failure_mode deny) during the outage: %+v", o)
	}

	late := startSluiceNoWait(t, "late", cfg, pgEnv(url)...)
	waitFor(t, func() bool { st, _ := call(t, c, "GET", late.base+"/healthz", ""); return st == 200 })
	if st, body := call(t, c, "GET", late.base+"/readyz", ""); st != 503 || !strings.Contains(body, "not-ready") || strings.Contains(body, addr) {
		t.Fatalf("/readyz of a replica started during the outage: %d %s", st, body)
	}

	cluster.Start()
	late.waitReady(t, 30*time.Second)
	waitFor(t, func() bool {
		st, body := call(t, c, "GET", first.base+"/readyz", "")
		return st == 200 && strings.Contains(body, `"status":"ok"`)
	})
}

func call(t *testing.T, c *http.Client, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, bytes.NewReader([]byte(body)))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/") && !json.Valid(b) {
		t.Fatalf("%s %s: invalid JSON %s", method, url, b)
	}
	return resp.StatusCode, string(b)
}

// waitFor polls cond every 50 ms for up to 30 s (it waits on other processes, not on a clock of this test).
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 30s")
		}
		time.Sleep(50 * time.Millisecond)
	}
}
