package faults

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	reloadTokenOld = "reload-old-0123456789abcdef"
	reloadTokenNew = "reload-new-0123456789abcdef"
)

// secretVolume lays out dir as Kubernetes mounts a Secret: tokens.yaml → ..data/tokens.yaml, ..data → a
// timestamped directory; update swaps ..data in one rename, as the kubelet does.
type secretVolume struct {
	dir string
	n   int
}

func (v *secretVolume) update(t *testing.T, tokens string) {
	t.Helper()
	v.n++
	ts := filepath.Join(v.dir, fmt.Sprintf("..2026_12_07_%d", v.n))
	if err := os.Mkdir(ts, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ts, "tokens.yaml"), []byte(tokens), 0o600); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(v.dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(v.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if v.n == 1 {
		if err := os.Symlink("..data/tokens.yaml", filepath.Join(v.dir, "tokens.yaml")); err != nil {
			t.Fatal(err)
		}
	}
}

func tokensYAML(token string) string { return "- {name: app, token: " + token + ", role: admin}\n" }

func reloadYAML(tokensFile string, limit int) string {
	return fmt.Sprintf(`store: memory
reload_interval: 100ms
tokens_file: %s
policies:
  - {name: hot, limit: %d, window: 1h}
  - {name: probe, limit: 1000000000, window: 1h, algorithm: sliding_window}
`, tokensFile, limit)
}

// TestReloadRealBinary (issue 27): the real binary under 40 keep-alive clients. SIGHUP used to kill it (exit 129,
// requests in flight reset, every memory counter lost); now each SIGHUP reloads and nothing is dropped. A Secret
// update (a symlink swap) rotates the tokens and a config edit changes a limit, with no signal; a broken file
// keeps everything in force; the key at its limit keeps its count through every reload.
func TestReloadRealBinary(t *testing.T) {
	dir := t.TempDir()
	vol := &secretVolume{dir: filepath.Join(dir, "secret")}
	if err := os.Mkdir(vol.dir, 0o700); err != nil {
		t.Fatal(err)
	}
	vol.update(t, tokensYAML(reloadTokenOld))
	tokensFile := filepath.Join(vol.dir, "tokens.yaml")
	cfg := writeConfig(t, dir, reloadYAML(tokensFile, 5))
	p := startSluice(t, "sluice", cfg)
	client := &http.Client{Timeout: 10 * time.Second}
	// The load clients hold tokenMu's read lock from reading the token until their answer, so switching the token
	// (the write lock) waits for every request sent with the old one: none is sent with it after its removal.
	token := reloadTokenOld
	var tokenMu sync.RWMutex
	current := func() string { tokenMu.RLock(); defer tokenMu.RUnlock(); return token }
	for i := range 5 {
		if o := check(context.Background(), client, p.base, current(), "hot", "k"); !o.allowed {
			t.Fatalf("hot check %d: %+v", i, o)
		}
	}

	// 40 keep-alive clients for the whole test.
	rec := &recorder{}
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range 40 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			for ctx.Err() == nil {
				tokenMu.RLock()
				rec.add(check(context.Background(), c, p.base, token, "probe", "k"+strconv.Itoa(rand.IntN(50))))
				tokenMu.RUnlock()
			}
		}()
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for !ok() {
			select {
			case <-p.done:
				t.Fatalf("sluice exited (%v) waiting for %s", p.err, what)
			case <-time.After(20 * time.Millisecond): // waiting for the process, not for time to pass
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s within 20s", what)
			}
		}
	}
	reloads := func(result string) float64 {
		return p.metrics(t)[`sluice_config_reloads_total{result="`+result+`"}`]
	}
	hot := func() bool { return check(context.Background(), client, p.base, current(), "hot", "k").allowed }

	for i := 1; i <= 3; i++ {
		if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		waitFor(fmt.Sprintf("reload %d after SIGHUP", i), func() bool { return reloads("ok") >= float64(i) })
	}
	if hot() {
		t.Fatal("the key at its limit was admitted after SIGHUP: its count was lost")
	}

	// A rotation through Secret updates, with no signal: the new token is added, the clients move to it, the
	// old one is removed and stops working.
	vol.update(t, tokensYAML(reloadTokenOld)+strings.Replace(tokensYAML(reloadTokenNew), "name: app", "name: next", 1))
	waitFor("the added token", func() bool {
		return check(context.Background(), client, p.base, reloadTokenNew, "probe", "rotation").status == 200
	})
	tokenMu.Lock()
	token = reloadTokenNew
	tokenMu.Unlock()
	vol.update(t, tokensYAML(reloadTokenNew))
	waitFor("the old token's removal", func() bool {
		return check(context.Background(), client, p.base, reloadTokenOld, "probe", "rotation").status == 401
	})

	// A config edit: the limit goes to 6, so the key gets exactly one more.
	if err := os.WriteFile(cfg, []byte(reloadYAML(tokensFile, 6)), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("the raised limit", hot)
	if hot() {
		t.Fatal("limit 6 admitted a 7th unit")
	}

	// A broken file: counted, logged, nothing changes.
	if err := os.WriteFile(cfg, []byte(strings.Replace(reloadYAML(tokensFile, 6), "limit: 6", "limit: -6", 1)), 0o600); err != nil {
		t.Fatal(err)
	}
	waitFor("the refused reload", func() bool { return reloads("invalid") >= 1 })
	if hot() {
		t.Fatal("a refused reload changed the policy in force")
	}
	if !strings.Contains(p.logText(), "configuration reload refused") {
		t.Fatal("the refused reload is not logged")
	}

	stop()
	wg.Wait()
	outs := rec.snapshot()
	bad := 0
	for _, o := range outs {
		if o.status != 200 {
			bad++
			if bad <= 5 {
				t.Errorf("load request failed across reloads: %+v", o)
			}
		}
	}
	t.Logf("%d load requests across 3 SIGHUPs, a token rotation, a limit change and a refused file: %d failed; %s", len(outs), bad, summary(outs))
	if bad > 0 {
		t.Fatalf("%d of %d requests failed", bad, len(outs))
	}
	select {
	case <-p.done:
		t.Fatalf("sluice exited: %v", p.err)
	default:
	}
}
