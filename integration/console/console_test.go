package console

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"

	"github.com/sluice-dev/sluice/app"
)

const (
	adminToken = "console-admin-token-0123456789"
	checkToken = "console-check-token-0123456789"
)

// serve runs sluice in-process (app.Run, memory store) with the policy login (3 per minute) and an admin and a
// check token, until the test ends; it returns the base URL.
func serve(t *testing.T) string {
	t.Helper()
	spec, err := os.ReadFile("../../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := app.Defaults()
	cfg.Listen = "127.0.0.1:0"
	cfg.Policies = []app.PolicyConfig{{Name: "login", Limit: 3, Window: app.Duration(time.Minute)}}
	cfg.Tokens = []app.TokenConfig{
		{Name: "ops", Token: adminToken, Role: "admin"},
		{Name: "gateway", Token: checkToken, Role: "check"},
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrs := make(chan string, 1)
	done := make(chan error, 1)
	go func() {
		done <- app.Run(ctx, cfg, app.Build{Version: "test", Spec: spec}, slog.New(slog.DiscardHandler), func(a string) { addrs <- a })
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	select {
	case a := <-addrs:
		return "http://" + a
	case err := <-done:
		t.Fatal(err)
	}
	return ""
}

// call sends one API request with token and decodes a JSON answer into out (when not nil); it returns the status.
func call(t *testing.T, method, url, token, body string, out any) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
	}
	return resp.StatusCode
}

// browser starts headless chromium with a fresh profile and every network feature that would reach outside off
// (the test machine's network is closed), and returns a chromedp context for one tab.
func browser(t *testing.T) context.Context {
	t.Helper()
	path, err := exec.LookPath("chromium")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("chromium is not on PATH; scripts/test.d/14-chromium-install.sh installs it (CI=true: this test must run)")
		}
		t.Skip("chromium is not on PATH: run scripts/test.d/14-chromium-install.sh (as root) to run this test")
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 1000),
	)
	ctx, cancel := chromedp.NewContext(alloc)
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil { // starts the browser, bound to ctx and not to a step's timeout
		t.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// page is the tab with the test: each step has its own timeout, and a step that fails ends the test with what
// the page showed.
type tab struct {
	t   *testing.T
	ctx context.Context
	log *pageLog
}

// pageLog keeps what the page logged that fails the test: exceptions and Content-Security-Policy violations.
type pageLog struct {
	mu       sync.Mutex
	problems []string
}

func (l *pageLog) add(m string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.problems = append(l.problems, m)
}

func (l *pageLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.problems...)
}

func (p tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		p.fail(what, err)
	}
}

// until waits for the JavaScript expression cond to be true in the page, asking every 50 ms. (chromedp.Poll
// builds its predicate with new Function, which the console's Content-Security-Policy refuses, as it should;
// Runtime.evaluate from the test is not the page's own script, so it may.)
func (p tab) until(what, cond string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 15*time.Second)
	defer cancel()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool]("Boolean("+cond+")"))
		if err == nil && ok {
			return
		}
		if ctx.Err() != nil {
			p.fail(what, fmt.Errorf("not true within 15 s (last answer %v, %v)", ok, err))
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
		}
	}
}

func (p tab) eval(expr string) string {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[string](expr))
	if err != nil {
		p.fail("evaluate "+expr, err)
	}
	return v
}

func (p tab) fail(what string, err error) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 5*time.Second)
	defer cancel()
	text, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.body.innerText`))
	p.t.Fatalf("%s: %v\nthe page logged: %q\nthe page showed:\n%s", what, err, p.log.all(), text)
}

func updating() bool { return os.Getenv("SLUICE_UPDATE_SCREENSHOTS") == "1" }

// screenshot writes the page to docs/img/name when SLUICE_UPDATE_SCREENSHOTS=1 (normal runs leave the tree alone).
func (p tab) screenshot(name string) {
	p.t.Helper()
	if !updating() {
		return
	}
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.fail("screenshot", err)
	}
	if !bytes.HasPrefix(png, []byte("\x89PNG")) {
		p.t.Fatalf("screenshot %s is not a PNG", name)
	}
	if err := os.WriteFile(filepath.Join("..", "..", "docs", "img", name), png, 0o644); err != nil {
		p.t.Fatal(err)
	}
	p.t.Logf("wrote docs/img/%s", name)
}

// denied is the denied count the login chart's legend shows (-1 before it shows one).
const denied = `Number((document.querySelector('.chart[data-policy="login"] .legend [data-outcome="denied"]') || {dataset: {total: -1}}).dataset.total)`

func TestConsoleInBrowser(t *testing.T) {
	base := serve(t)
	ctx := browser(t)
	p := tab{t: t, ctx: ctx, log: &pageLog{}}

	// What the page logs: an exception or a Content-Security-Policy violation fails the test.
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			text := m.String()
			if m.IsException() || strings.Contains(text, "Content Security Policy") || strings.Contains(text, "Content-Security-Policy") {
				p.log.add(text)
			}
		}
	}()
	// The console asks before it deletes a policy; the operator says yes.
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	go func() {
		for _, err := range dialogs {
			if err != nil {
				return
			}
			_, _ = chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: true})
		}
	}()

	// Sign in with the admin token: the policies are listed, the config file's read-only.
	p.do("open /ui and sign in",
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), adminToken),
		chromedp.Click(chromedp.CSS("#login button")),
		chromedp.WaitVisible(chromedp.CSS(`#policies tr[data-policy="login"]`)),
	)
	if got := p.eval(`sessionStorage.getItem('sluice.token')`); got != adminToken {
		t.Errorf("sessionStorage holds %q, want the token", got)
	}
	if got := p.eval(`location.href + document.cookie`); strings.Contains(got, adminToken) {
		t.Errorf("the token is in the URL or a cookie: %s", got)
	}
	if got := p.eval(`document.querySelector('#policies tr[data-policy="login"]').innerText`); !strings.Contains(got, "read-only (config file)") {
		t.Errorf("the config policy's row: %q, want it read-only", got)
	}

	// A client is limited: mallory's fourth and fifth checks are denied.
	check := func(key string, n int) {
		for range n {
			var d struct{ Allowed bool }
			if code := call(t, "POST", base+"/v1/check", checkToken, fmt.Sprintf(`{"policy":"login","key":%q}`, key), &d); code != 200 {
				t.Fatalf("check: %d", code)
			}
		}
	}
	check("alice", 1)
	check("mallory", 5)
	p.until("the chart shows mallory's 2 denials", denied+` === 2`)

	// The chart moves: two more denials raise the count and draw a rate above the baseline.
	check("mallory", 2)
	p.until("the chart shows 4 denials", denied+` === 4`)
	p.until("the denied line leaves the baseline", `document.querySelector('.chart[data-policy="login"] polyline[data-outcome="denied"]')
		.getAttribute('points').split(' ').some((pt) => Number(pt.split(',')[1]) < 97)`)

	if updating() {
		// For the screenshot, a minute's chart in a few seconds: mixed traffic over ten polls of the page.
		for i := range 10 {
			n := p.eval(`document.querySelector('#charts').dataset.polls`)
			check(fmt.Sprintf("user-%d", i), 1+i%3)
			check("mallory", i%3)
			p.until("the next poll", `document.querySelector('#charts').dataset.polls !== '`+n+`'`)
		}
	}

	// The top denied keys name mallory first; inspecting it shows its state, denied.
	p.until("mallory tops the denied keys", `document.querySelector('#top tbody tr td.key')?.textContent === 'mallory'`)
	p.do("inspect mallory", chromedp.Click(chromedp.CSS("#top tbody tr:first-child button.inspect")))
	p.until("the inspector shows mallory denied", `document.querySelector('#state [data-field="remaining"]')?.textContent === '0 of 3'
		&& document.querySelector('#state [data-field="verdict"]').textContent === 'would be denied'`)
	p.screenshot("console.png")

	// Reset: the inspector shows what a check of a fresh key gets (a peek reports the remaining after one check of
	// cost 1), and the API agrees.
	p.do("reset mallory", chromedp.Click(chromedp.ID("reset")))
	p.until("the inspector shows mallory reset", `document.querySelector('#state [data-field="remaining"]')?.textContent === '2 of 3'
		&& document.querySelector('#state [data-field="verdict"]').textContent === 'would be allowed'`)
	var st, fresh struct{ Remaining int }
	call(t, "GET", base+"/v1/policies/login/keys/nobody", checkToken, "", &fresh)
	if code := call(t, "GET", base+"/v1/policies/login/keys/mallory", checkToken, "", &st); code != 200 || st.Remaining != fresh.Remaining || fresh.Remaining != 2 {
		t.Errorf("after the reset the API says %d, remaining %d; want 200, 2 as a fresh key's", code, st.Remaining)
	}

	// The config file's policy cannot be replaced from the form: the API answers 409 and the page says why.
	p.do("try to replace the config policy",
		chromedp.SendKeys(chromedp.CSS(`#policy-form [name="name"]`), "login"),
		chromedp.SendKeys(chromedp.CSS(`#policy-form [name="limit"]`), "100"),
		chromedp.SendKeys(chromedp.CSS(`#policy-form [name="window"]`), "1m"),
		chromedp.Click(chromedp.CSS("#policy-form button")),
	)
	p.until("the page shows the conflict", `document.querySelector('#message').className === 'error'
		&& document.querySelector('#message').textContent.startsWith('Not saved: ')`)
	t.Logf("replacing a config policy: %s", p.eval(`document.querySelector('#message').textContent`))
	if got := p.eval(`document.querySelector('#policies tr[data-policy="login"] td.num').textContent`); got != "3" {
		t.Errorf("the config policy's limit shows %q after a refused change, want 3", got)
	}

	// An API policy: created from the form, changed, then deleted.
	p.do("create a policy",
		chromedp.SetValue(chromedp.CSS(`#policy-form [name="name"]`), "search"),
		chromedp.Click(chromedp.CSS("#policy-form button")),
		chromedp.WaitVisible(chromedp.CSS(`#policies tr[data-policy="search"]`)),
	)
	p.do("edit it",
		chromedp.Click(chromedp.CSS(`#policies tr[data-policy="search"] button.edit`)),
	)
	p.until("the form holds it", `document.querySelector('#policy-form [name="limit"]').value === '100'`)
	p.do("change its limit",
		chromedp.SetValue(chromedp.CSS(`#policy-form [name="limit"]`), "50"),
		chromedp.Click(chromedp.CSS("#policy-form button")),
	)
	p.until("the table shows the new limit", `document.querySelector('#policies tr[data-policy="search"] td.num')?.textContent === '50'`)
	var pol struct {
		Limit  int
		Source string
	}
	if code := call(t, "GET", base+"/v1/policies/search", adminToken, "", &pol); code != 200 || pol.Limit != 50 || pol.Source != "api" {
		t.Errorf("the API has the policy as %d %+v; want 200, limit 50 from the api", code, pol)
	}
	// Its overrides: picked by name, one made from the form, a check decided under it, shown in the inspector.
	p.do("pick it",
		chromedp.Click(chromedp.CSS(`#policies tr[data-policy="search"] td button.plain:not(.edit)`)),
	)
	p.until("its overrides are listed", `document.querySelector('#overrides-of').textContent === '(search)'`)
	p.do("make an override",
		chromedp.SetValue(chromedp.CSS(`#override-form [name="match"]`), "vip:*"),
		chromedp.SetValue(chromedp.CSS(`#override-form [name="limit"]`), "500"),
		chromedp.Click(chromedp.CSS("#override-form button")),
		chromedp.WaitVisible(chromedp.CSS(`#overrides tr[data-match="vip:*"]`)),
	)
	var ov struct{ Limit int }
	if code := call(t, "GET", base+"/v1/policies/search/overrides/vip:*", adminToken, "", &ov); code != 200 || ov.Limit != 500 {
		t.Errorf("the API has the override as %d %+v; want 200, limit 500", code, ov)
	}
	p.do("inspect a key under it",
		chromedp.SetValue(chromedp.CSS("#inspect-policy"), "search"),
		chromedp.SetValue(chromedp.CSS("#inspect-key"), "vip:1"),
		chromedp.Click(chromedp.CSS(`#inspect button[type="submit"]`)),
	)
	p.until("the inspector names the override", `document.querySelector('#state [data-field="override"]')?.textContent === 'vip:*' && document.querySelector('#state [data-field="remaining"]').textContent === '499 of 500'`)
	p.do("delete the override",
		chromedp.Click(chromedp.CSS(`#overrides tr[data-match="vip:*"] button.delete`)),
		chromedp.WaitNotPresent(chromedp.CSS(`#overrides tr[data-match="vip:*"]`)),
	)
	p.do("delete it",
		chromedp.Click(chromedp.CSS(`#policies tr[data-policy="search"] button.delete`)),
		chromedp.WaitNotPresent(chromedp.CSS(`#policies tr[data-policy="search"]`)),
	)
	if code := call(t, "GET", base+"/v1/policies/search", adminToken, "", nil); code != 404 {
		t.Errorf("after the delete GET answers %d, want 404", code)
	}

	// A check-role token sees (charts, a key's state) and changes nothing: no policies, no top keys, no reset.
	p.do("sign in with the check token",
		chromedp.Click(chromedp.ID("logout")),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), checkToken),
		chromedp.Click(chromedp.CSS("#login button")),
		chromedp.WaitVisible(chromedp.ID("inspect")),
		chromedp.WaitNotVisible(chromedp.ID("policies")),
		chromedp.WaitNotVisible(chromedp.ID("reset")),
		chromedp.WaitVisible(chromedp.CSS("#policies-section .needs-admin")),
		chromedp.SetValue(chromedp.ID("inspect-policy"), "login"),
		chromedp.SetValue(chromedp.ID("inspect-key"), "mallory"),
		chromedp.Click(chromedp.CSS(`#inspect button[type="submit"]`)),
	)
	p.until("a check token peeks", `document.querySelector('#state [data-field="remaining"]')?.textContent === '2 of 3'`)
	p.until("and sees the chart", denied+` >= 4`) // peeks count as decisions too

	// A token the server does not know is refused, and not kept.
	p.do("sign in with a wrong token",
		chromedp.Click(chromedp.ID("logout")),
		chromedp.SendKeys(chromedp.ID("token"), "not-a-token-of-this-server"),
		chromedp.Click(chromedp.CSS("#login button")),
	)
	p.until("the wrong token is refused", `document.querySelector('#message').textContent.startsWith('The token was refused')
		&& sessionStorage.getItem('sluice.token') === null`)

	for _, m := range p.log.all() {
		t.Errorf("the page logged: %s", m)
	}
}
