package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sluice-dev/sluice/adapters/postgres/pgtest"
)

// The test binary doubles as the sluice binary: with SLUICE_TEST_BE_MAIN=1 it runs main, so these tests drive
// the real command line as a separate process without a separate build.
func TestMain(m *testing.M) {
	if os.Getenv("SLUICE_TEST_BE_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func sluice(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "SLUICE_TEST_BE_MAIN=1"), env...)
	return cmd
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func TestConfigCheck(t *testing.T) {
	out, err := sluice(t, nil, "config", "check", "config/sluice.yaml").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "config/sluice.yaml: ok (store memory, 3 policies") {
		t.Fatalf("%v: %s", err, out)
	}
	out, err = sluice(t, []string{"SLUICE_STORE=postgress"}, "config", "check", "config/sluice.yaml").CombinedOutput()
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), `SLUICE_STORE="postgress": must be one of memory, postgres`) {
		t.Fatalf("exit %d: %s", code, out)
	}
}

// Calendar periods name IANA zones: the binary embeds Go's time zone database (time/tzdata), so a container
// without tzdata (distroless, scratch) loads them, and `config check` reads a calendar policy; on a store that does
// not decide calendar periods yet, the setting is named.
func TestCalendarPolicyConfigAndEmbeddedZones(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{.ImportPath}}", ".").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	if !strings.Contains("\n"+string(out), "\ntime/tzdata\n") {
		t.Fatal("the sluice binary does not embed time/tzdata: calendar periods would need the host's zone files")
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "sluice.yaml")
	config := "policies:\n  - name: monthly\n    limit: 1000\n    period: month\n    time_zone: America/New_York\n    anchor: 2026-01-31T00:00:00-05:00\n"
	if err := os.WriteFile(file, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := sluice(t, nil, "config", "check", file).CombinedOutput(); err != nil || !strings.Contains(string(out), ": ok (store memory, 1 policies") {
		t.Fatalf("%v: %s", err, out)
	}
	out, err = sluice(t, []string{"SLUICE_STORE=redis", "SLUICE_REDIS_ADDRS=127.0.0.1:6379"}, "config", "check", file).CombinedOutput()
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), "policies[0].period (line 4): calendar periods are not decided by the redis store yet") {
		t.Fatalf("exit %d: %s", code, out)
	}
}

// Flags come before or after a command's words, as the usage line, README and operator guide show them.
func TestFlagsAfterTheSubcommand(t *testing.T) {
	url := pgtest.NewDatabase(t)
	cfg := filepath.Join(t.TempDir(), "sluice.yaml")
	if err := os.WriteFile(cfg, []byte("store: postgres\npostgres:\n  url: "+url+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"migrate", "status", "-config", cfg},
		{"migrate", "-config", cfg, "status"},
		{"migrate", "up", "-config", cfg},
	} {
		out, err := sluice(t, nil, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "schema") {
			t.Errorf("%q: %v\n%s", args, err, out)
		}
	}
	for _, args := range [][]string{{"config", "check", "-config", cfg}, {"config", "-config", cfg, "check"}, {"config", "check", cfg}} {
		out, err := sluice(t, nil, args...).CombinedOutput()
		if err != nil || !strings.Contains(string(out), cfg+": ok (store postgres") {
			t.Errorf("%q: %v\n%s", args, err, out)
		}
	}
	if out, err := sluice(t, nil, "migrate", "status", "-config").CombinedOutput(); exitCode(err) != 2 {
		t.Errorf("a flag without its value: exit %d\n%s", exitCode(err), out)
	}
}

// config check refuses what start-up refuses (an unparsable postgres.url, an unknown variable) and prints
// warnings without failing.
func TestConfigCheckProblemsAndWarnings(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(bad, []byte("store: postgres\npostgres:\n  url: \"host=x port=notaport\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := sluice(t, []string{"SLUICE_STOR=postgres"}, "config", "check", bad).CombinedOutput()
	if code := exitCode(err); code != 1 || !strings.Contains(string(out), "postgres.url (line 3): invalid port") ||
		!strings.Contains(string(out), "SLUICE_STOR: not a sluice setting; did you mean SLUICE_STORE?") {
		t.Fatalf("exit %d: %s", code, out)
	}
	big := filepath.Join(dir, "big.yaml")
	if err := os.WriteFile(big, []byte("policies:\n  - {name: big, limit: 100000, window: 1h}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err = sluice(t, nil, "config", "check", big).CombinedOutput()
	if code := exitCode(err); code != 0 || !strings.Contains(string(out), `warning: policies[0].limit (line 2): policy "big" is a sliding_log with limit 100000`) ||
		!strings.Contains(string(out), big+": ok") {
		t.Fatalf("exit %d: %s", code, out)
	}
}

func exitCode(err error) int {
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// SIGTERM stops new connections, lets a request already in flight finish, and exits 0.
func TestSIGTERMDrainsInFlightRequests(t *testing.T) {
	addr := freeAddr(t)
	cmd := sluice(t, []string{"SLUICE_LISTEN=" + addr}, "serve", "-config", "config/sluice.yaml")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	logs := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			logs <- sc.Text()
		}
		close(logs)
	}()
	waitFor(t, logs, "sluice serving")

	// A request is in flight: its handler is waiting for the body. Expect: 100-continue makes that observable:
	// the server answers "100 Continue" only once it has accepted the connection, parsed the headers and the
	// handler has started reading the body. (Signalling before that would race the server's Accept: a connection
	// still in the kernel's backlog is reset when the listener closes, which is correct but not what this tests.)
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(20 * time.Second))
	body := `{"policy":"login","key":"drain"}`
	fmt.Fprintf(conn, "POST /v1/check HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n", len(body))
	br := bufio.NewReader(conn)
	if resp, err := http.ReadResponse(br, nil); err != nil || resp.StatusCode != http.StatusContinue {
		t.Fatalf("want 100 Continue before the body is sent, got %v %v", resp, err)
	}
	if _, err := io.WriteString(conn, body[:10]); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	waitFor(t, logs, "shutting down")
	// New connections are refused once the listener is closed.
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Now().After(deadline) {
			t.Fatal("still accepting connections after SIGTERM")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The in-flight request completes.
	if _, err := io.WriteString(conn, body[10:]); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("in-flight request: %v", err)
	}
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(string(got), `"allowed":true`) {
		t.Fatalf("in-flight request: %d %s", resp.StatusCode, got)
	}
	conn.Close()
	waitFor(t, logs, "drained and stopped")
	if err := cmd.Wait(); err != nil {
		t.Fatalf("exit after SIGTERM: %v", err)
	}
}

func waitFor(t *testing.T, logs <-chan string, want string) {
	t.Helper()
	timeout := time.After(20 * time.Second)
	for {
		select {
		case line, ok := <-logs:
			if !ok {
				t.Fatalf("process ended before logging %q", want)
			}
			if strings.Contains(line, want) {
				return
			}
		case <-timeout:
			t.Fatalf("no log line %q", want)
		}
	}
}
