package docs

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// docFiles are the repository's Markdown documents (README.md, docs/*.md, the chart's and the SDK's READMEs, and
// any added later), relative to the root; node_modules and dot-directories are not documents.
func docFiles(t *testing.T, root string) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && path != root && (d.Name() == "node_modules" || strings.HasPrefix(d.Name(), ".")) {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(d.Name(), ".md") {
			rel, _ := filepath.Rel(root, path)
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// block is one fenced block of a document.
type block struct {
	file    string
	line    int // line of the opening fence, 1-based
	info    string
	body    string
	skip    string   // reason, when marked skip
	env     []string // K=V from the marker
	ownSrv  bool
	serves  bool
	badMark string // a marker that does not parse
}

func (b block) name() string { return fmt.Sprintf("%s:%d", b.file, b.line) }

func (b block) shell() bool {
	switch b.info {
	case "sh", "bash", "shell", "console":
		return true
	}
	return false
}

var markerRE = regexp.MustCompile(`^<!--\s*docs-test:\s*(.*?)\s*-->$`)

// parseBlocks finds every fenced block of a Markdown text and the marker just before it.
func parseBlocks(file, text string) []block {
	lines := strings.Split(text, "\n")
	var out []block
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		trimmed := strings.TrimLeft(l, " ")
		if !strings.HasPrefix(trimmed, "```") {
			continue
		}
		indent := len(l) - len(trimmed)
		b := block{file: file, line: i + 1, info: strings.TrimSpace(strings.TrimPrefix(trimmed, "```"))}
		if i > 0 {
			if m := markerRE.FindStringSubmatch(strings.TrimSpace(lines[i-1])); m != nil {
				b.applyMarker(m[1])
			}
		}
		var body []string
		for i++; i < len(lines); i++ {
			if strings.TrimSpace(lines[i]) == "```" {
				break
			}
			body = append(body, strings.TrimPrefix(lines[i], strings.Repeat(" ", indent)))
		}
		b.body = strings.Join(body, "\n")
		out = append(out, b)
	}
	return out
}

func (b *block) applyMarker(m string) {
	words := strings.Fields(m)
	for i := 0; i < len(words); i++ {
		switch w := words[i]; w {
		case "skip":
			b.skip = strings.Join(words[i+1:], " ")
			if b.skip == "" {
				b.badMark = "skip needs a reason: <!-- docs-test: skip REASON -->"
			}
			return
		case "own-server":
			b.ownSrv = true
		case "serves":
			b.serves = true
		case "env":
			for i+1 < len(words) && strings.Contains(words[i+1], "=") {
				i++
				b.env = append(b.env, words[i])
			}
		default:
			b.badMark = fmt.Sprintf("unknown marker word %q (want skip REASON, env K=V..., own-server, serves)", w)
			return
		}
	}
}

// command is one `$ ` command of a console block and the output lines the document shows for it.
type command struct {
	text       string
	want       []string
	background bool
}

// parseConsole splits a console block into commands and their expected output.
func parseConsole(body string) []command {
	var cmds []command
	lines := strings.Split(body, "\n")
	for i := 0; i < len(lines); i++ {
		l := lines[i]
		if strings.HasPrefix(l, "$ ") {
			text := strings.TrimPrefix(l, "$ ")
			for strings.HasSuffix(text, `\`) && i+1 < len(lines) {
				i++
				text = text[:len(text)-1] + "\n" + lines[i]
			}
			bg := strings.HasSuffix(strings.TrimSpace(text), "&") && !strings.HasSuffix(strings.TrimSpace(text), "&&")
			cmds = append(cmds, command{text: text, background: bg})
			continue
		}
		if strings.TrimSpace(l) == "" || len(cmds) == 0 {
			continue
		}
		cmds[len(cmds)-1].want = append(cmds[len(cmds)-1].want, l)
	}
	return cmds
}

var digits = regexp.MustCompile(`[0-9]+`)

// normalise makes a line comparable across runs: every run of digits becomes 0.
func normalise(s string) string { return digits.ReplaceAllString(strings.TrimRight(s, " \r"), "0") }

// lineMatcher turns an expected line into a regexp: literal text, `...` matches anything.
func lineMatcher(want string) *regexp.Regexp {
	parts := strings.Split(normalise(want), "...")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile("^" + strings.Join(parts, ".*") + "$")
}

// matchInOrder reports the first expected line that does not appear, in order, among got's lines ("" if all do).
func matchInOrder(want []string, got string) string {
	gotLines := strings.Split(got, "\n")
	j := 0
	for _, w := range want {
		re := lineMatcher(w)
		for ; j < len(gotLines); j++ {
			if re.MatchString(normalise(gotLines[j])) {
				break
			}
		}
		if j == len(gotLines) {
			return w
		}
		j++
	}
	return ""
}

func TestMatchInOrder(t *testing.T) {
	got := "HTTP/1.1 200 OK\nContent-Length: 98\nContent-Type: application/json\nDate: Tue\n\n{\"allowed\":true,\"remaining\":4}\n"
	for _, c := range []struct {
		want []string
		ok   bool
	}{
		{[]string{"HTTP/1.1 200 OK", "Content-Type: application/json", `{"allowed":true,"remaining":0}`}, true},
		{[]string{"HTTP/1.1 415 Unsupported Media Type"}, false},
		{[]string{`{"allowed":false,"remaining":0}`}, false},
		{[]string{"Content-Type: application/json", "HTTP/1.1 200 OK"}, false}, // order matters
		{[]string{"HTTP/1.1 ... OK", "Date: ..."}, true},
	} {
		if miss := matchInOrder(c.want, got); (miss == "") != c.ok {
			t.Errorf("matchInOrder(%q) missed %q, want ok=%v", c.want, miss, c.ok)
		}
	}
	cmds := parseConsole("$ a &\nlog line\n\n$ curl -s x \\\n  -d y\n{\"k\":1}\n$ # note\n")
	if len(cmds) != 3 || !cmds[0].background || cmds[1].text != "curl -s x \n  -d y" || len(cmds[1].want) != 1 || cmds[2].background {
		t.Fatalf("parseConsole: %+v", cmds)
	}
	bs := parseBlocks("f.md", "x\n<!-- docs-test: env A=1 B=2 own-server -->\n```sh\necho $A\n```\n<!-- docs-test: skip -->\n```console\n$ x\n```\n```\nplain\n```\n")
	if len(bs) != 3 || bs[0].info != "sh" || len(bs[0].env) != 2 || !bs[0].ownSrv || bs[1].badMark == "" || bs[2].info != "" {
		t.Fatalf("parseBlocks: %+v", bs)
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// waitReady polls /readyz until it answers 200, the process exits, or the deadline passes.
func waitReady(port int, exited <-chan struct{}, within time.Duration) error {
	deadline := time.Now().Add(within)
	url := fmt.Sprintf("http://127.0.0.1:%d/readyz", port)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-exited:
			return fmt.Errorf("the process exited before %s answered", url)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not answer 200 within %s (last error: %v)", url, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// group runs a command in its own process group, so everything it starts (a backgrounded server) is stopped
// with it.
type group struct {
	cmd    *exec.Cmd
	out    bytes.Buffer
	exited chan struct{}
}

func startGroup(t *testing.T, dir string, env []string, name string, args ...string) *group {
	t.Helper()
	g := &group{cmd: exec.Command(name, args...), exited: make(chan struct{})}
	g.cmd.Dir = dir
	g.cmd.Env = env
	g.cmd.Stdout, g.cmd.Stderr = &g.out, &g.out
	g.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	// A child left in the background (a server the block started) keeps the output pipe open: stop waiting for it
	// a moment after the shell itself exits; stop kills the group.
	g.cmd.WaitDelay = time.Second
	if err := g.cmd.Start(); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	go func() { _ = g.cmd.Wait(); close(g.exited) }()
	t.Cleanup(g.stop)
	return g
}

// stop sends SIGTERM to the whole group, then SIGKILL after 10 s.
func (g *group) stop() {
	_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-g.exited:
	case <-time.After(10 * time.Second):
		_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
		<-g.exited
	}
	// Children that outlived the shell (a backgrounded server) get the same treatment.
	_ = syscall.Kill(-g.cmd.Process.Pid, syscall.SIGKILL)
}

var port8080 = regexp.MustCompile(`\b(localhost|127\.0\.0\.1):8080\b`)

func TestDocsShellExamples(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	var blocks []block
	for _, f := range docFiles(t, root) {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		blocks = append(blocks, parseBlocks(f, string(data))...)
	}
	var runnable []block
	for _, b := range blocks {
		switch {
		case b.info == "":
			t.Errorf("%s: fenced block without an info string: tag it (sh, console, text, promql, ...) so the docs test knows whether it is a shell example", b.name())
		case b.badMark != "":
			t.Errorf("%s: %s", b.name(), b.badMark)
		case b.shell() && b.skip != "":
			t.Logf("skip %s (%s): %s", b.name(), b.info, b.skip)
		case b.shell():
			runnable = append(runnable, b)
		}
	}
	if len(runnable) == 0 {
		t.Fatal("no runnable shell example found in the docs")
	}

	bin := filepath.Join(t.TempDir(), "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(bin, "sluice"), ".")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	for _, b := range runnable {
		t.Run(strings.ReplaceAll(b.name(), "/", "_"), func(t *testing.T) { runBlock(t, root, bin, b) })
	}
}

func runBlock(t *testing.T, root, bin string, b block) {
	port := freePort(t)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	env := append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "SLUICE_LISTEN="+addr)
	env = append(env, b.env...)
	if !b.ownSrv && !b.serves {
		srvEnv := env
		if !hasKey(b.env, "SLUICE_CONFIG") {
			srvEnv = append(srvEnv, "SLUICE_CONFIG="+filepath.Join(root, "config", "sluice.yaml"))
		}
		srv := startGroup(t, root, srvEnv, filepath.Join(bin, "sluice"), "serve")
		if err := waitReady(port, srv.exited, 30*time.Second); err != nil {
			t.Fatalf("sluice for %s: %v\n%s", b.name(), err, srv.out.String())
		}
	}
	body := port8080.ReplaceAllString(b.body, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	if b.info != "console" {
		g := startGroup(t, root, env, "bash", "-euo", "pipefail", "-c", body)
		if b.serves {
			if err := waitReady(port, g.exited, 90*time.Second); err != nil {
				t.Fatalf("%s: %v\n--- block:\n%s\n--- output:\n%s", b.name(), err, body, g.out.String())
			}
			return
		}
		select {
		case <-g.exited:
		case <-ctx.Done():
			t.Fatalf("%s: still running after 2 minutes\n--- output:\n%s", b.name(), g.out.String())
		}
		if code := g.cmd.ProcessState.ExitCode(); code != 0 {
			t.Fatalf("%s: exit %d\n--- block:\n%s\n--- output:\n%s", b.name(), code, body, g.out.String())
		}
		return
	}

	// console: one script, each command preceded by a delimiter line so its output can be told apart.
	cmds := parseConsole(body)
	var script strings.Builder
	for i, c := range cmds {
		fmt.Fprintf(&script, "echo '@@docs-test %d@@'\n%s\n", i, c.text)
		if c.background {
			fmt.Fprintf(&script, "for _ in $(seq 1800); do curl -fso /dev/null http://%s/readyz && break; sleep 0.05; done\n", addr)
		}
	}
	fmt.Fprintf(&script, "echo '@@docs-test end@@'\n")
	g := startGroup(t, root, env, "bash", "-uo", "pipefail", "-c", script.String())
	select {
	case <-g.exited:
	case <-ctx.Done():
		t.Fatalf("%s: still running after 2 minutes\n--- output:\n%s", b.name(), g.out.String())
	}
	all := g.out.String()
	if !strings.Contains(all, "@@docs-test end@@") {
		t.Fatalf("%s: the block stopped before its last command\n--- output:\n%s", b.name(), all)
	}
	for i, c := range cmds {
		seg := segment(all, i)
		if c.background {
			seg = all
		}
		if miss := matchInOrder(port8080Lines(c.want, addr), seg); miss != "" {
			t.Errorf("%s: `%s` did not print %q (digits normalised, ... matches anything)\n--- it printed:\n%s", b.name(), c.text, miss, seg)
		}
	}
}

func port8080Lines(lines []string, addr string) []string {
	out := make([]string, len(lines))
	for i, l := range lines {
		out[i] = port8080.ReplaceAllString(l, addr)
	}
	return out
}

// segment is what command i printed: the text between its delimiter and the next one.
func segment(all string, i int) string {
	start := strings.Index(all, fmt.Sprintf("@@docs-test %d@@\n", i))
	if start < 0 {
		return ""
	}
	rest := all[start:]
	rest = rest[strings.Index(rest, "\n")+1:]
	if end := strings.Index(rest, "@@docs-test "); end >= 0 {
		rest = rest[:end]
	}
	return rest
}

func hasKey(env []string, key string) bool {
	for _, kv := range env {
		if strings.HasPrefix(kv, key+"=") {
			return true
		}
	}
	return false
}

// TestComposeHeaderMatchesOperatorGuide: the try-it loop in deploy/compose.yaml's header is the operator guide's
// (which TestDocsShellExamples runs), so the header cannot rot on its own.
func TestComposeHeaderMatchesOperatorGuide(t *testing.T) {
	root, _ := filepath.Abs("../..")
	compose, err := os.ReadFile(filepath.Join(root, "deploy", "compose.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var header []string
	for _, l := range strings.Split(string(compose), "\n") {
		if !strings.HasPrefix(l, "#") {
			break
		}
		if strings.HasPrefix(l, "#   ") && !strings.Contains(l, "docker compose") {
			header = append(header, strings.TrimPrefix(l, "#   "))
		}
	}
	guide, err := os.ReadFile(filepath.Join(root, "docs", "operator.md"))
	if err != nil {
		t.Fatal(err)
	}
	loop := strings.Join(header, "\n")
	if !strings.Contains(loop, "curl") {
		t.Fatalf("deploy/compose.yaml's header has no try-it command (lines starting with '#   '):\n%s", compose[:min(len(compose), 600)])
	}
	for _, b := range parseBlocks("docs/operator.md", string(guide)) {
		if b.shell() && b.skip == "" && squash(b.body) == squash(loop) {
			return
		}
	}
	t.Fatalf("deploy/compose.yaml's try-it command is not a runnable block of docs/operator.md (keep them identical):\n%s", loop)
}

// squash ignores differences in spacing and trailing comments' alignment.
func squash(s string) string { return strings.Join(strings.Fields(s), " ") }
