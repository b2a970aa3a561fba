// Package redistest finds the Redis servers the tests use and starts private ones for tests that kill them.
//
// SingleAddr and ClusterAddrs return the shared test servers that scripts/test.d/05-redis-up.sh starts (a single
// redis-server on 127.0.0.1:16379 and a 3-master/3-replica cluster on 127.0.0.1:16381-16386; override with
// SLUICE_TEST_REDIS_ADDR and SLUICE_TEST_REDIS_CLUSTER). Tests share them and stay apart by giving each store its
// own key prefix (Prefix). StartCluster runs a private cluster from Debian's redis-server in a temporary
// directory on free ports, for tests that kill a master; stopping it never touches the shared servers.
//
// When a server does not answer the test is skipped, unless CI=true, in which case it fails: CI runs every
// Redis test.
package redistest

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// InCI reports whether CI=true: Redis tests must then run, not skip.
func InCI() bool { return os.Getenv("CI") == "true" }

// Unavailable skips the test, or fails it in CI.
func Unavailable(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("CI=true and "+format, args...)
	}
	t.Skipf(format+" (run scripts/test.d/05-redis-up.sh; set CI=true to make this a failure)", args...)
}

// SingleAddr is the shared single Redis server's address; the test is skipped (failed in CI) if it is down.
func SingleAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("SLUICE_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:16379"
	}
	if err := ping(addr); err != nil {
		Unavailable(t, "no Redis at %s: %v", addr, err)
	}
	return addr
}

// ClusterAddrs are the shared test cluster's seed addresses; the test is skipped (failed in CI) if the cluster
// is not in state ok.
func ClusterAddrs(t testing.TB) []string {
	t.Helper()
	v := os.Getenv("SLUICE_TEST_REDIS_CLUSTER")
	if v == "" {
		v = "127.0.0.1:16381,127.0.0.1:16382,127.0.0.1:16383,127.0.0.1:16384,127.0.0.1:16385,127.0.0.1:16386"
	}
	addrs := strings.Split(v, ",")
	out, err := command(addrs[0], "CLUSTER", "INFO")
	if err != nil || !strings.Contains(out, "cluster_state:ok") {
		Unavailable(t, "no Redis Cluster in state ok at %s: %v %q", addrs[0], err, out)
	}
	return addrs
}

// Prefix returns a fresh key prefix, so tests sharing a server never see each other's keys.
func Prefix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return "t" + hex.EncodeToString(b) + ":"
}

func ping(addr string) error {
	out, err := command(addr, "PING")
	if err != nil {
		return err
	}
	if out != "PONG" {
		return fmt.Errorf("PING answered %q", out)
	}
	return nil
}

// command sends one command in RESP and returns the reply as text (a bulk string's content, a simple string, or
// an error's message as an error). It is enough for PING, CLUSTER INFO and the like without a client.
func command(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := c.Write([]byte(b.String())); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch {
	case strings.HasPrefix(line, "+"), strings.HasPrefix(line, ":"):
		return line[1:], nil
	case strings.HasPrefix(line, "-"):
		return "", fmt.Errorf("%s", line[1:])
	case strings.HasPrefix(line, "$"):
		n, err := strconv.Atoi(line[1:])
		if err != nil || n < 0 {
			return "", err
		}
		buf := make([]byte, n+2)
		if _, err := io(r, buf); err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	return line, nil
}

func io(r *bufio.Reader, buf []byte) (int, error) {
	n := 0
	for n < len(buf) {
		m, err := r.Read(buf[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Server is a private single redis-server started by StartServer.
type Server struct {
	Addr string
	Cmd  *exec.Cmd
}

// StartServer starts a private redis-server (no persistence, noeviction) on a free loopback port and stops it
// when the test ends. Skipped (failed in CI) if redis-server is missing.
func StartServer(t testing.TB) *Server {
	t.Helper()
	if _, err := exec.LookPath("redis-server"); err != nil {
		Unavailable(t, "redis-server not installed")
	}
	dir := t.TempDir()
	port := freePort(t)
	cmd := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
		"--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction", "--logfile", filepath.Join(dir, "redis.log"))
	if err := cmd.Start(); err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() })
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Cmd: cmd}
	waitUp(t, s.Addr)
	return s
}

// StartSentinel starts a Sentinel (redis-server --sentinel) on a free loopback port that monitors master (an
// address) as master set "sluice" with quorum 1, and stops it when the test ends.
func StartSentinel(t testing.TB, master string) string {
	t.Helper()
	dir := t.TempDir()
	port := freePort(t)
	host, mport, _ := net.SplitHostPort(master)
	conf := filepath.Join(dir, "sentinel.conf")
	body := fmt.Sprintf("bind 127.0.0.1\nport %d\ndir %s\nsentinel monitor sluice %s %s 1\nsentinel down-after-milliseconds sluice 1000\n", port, dir, host, mport)
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-server", conf, "--sentinel", "--logfile", filepath.Join(dir, "sentinel.log"))
	if err := cmd.Start(); err != nil {
		t.Fatalf("redis-server --sentinel: %v", err)
	}
	t.Cleanup(func() { _ = cmd.Process.Signal(syscall.SIGKILL); _ = cmd.Wait() })
	addr := "127.0.0.1:" + strconv.Itoa(port)
	waitUp(t, addr)
	return addr
}

// Pids returns the process ids of the cluster's live nodes.
func (c *Cluster) Pids() []int {
	var out []int
	for _, p := range c.procs {
		out = append(out, p.Process.Pid)
	}
	return out
}

// Cluster is a private Redis Cluster of 3 masters and 3 replicas started by StartCluster.
type Cluster struct {
	Dir   string
	Ports []int
	procs map[int]*exec.Cmd
}

// Addrs are the cluster's node addresses, masters first as created.
func (c *Cluster) Addrs() []string {
	out := make([]string, len(c.Ports))
	for i, p := range c.Ports {
		out[i] = "127.0.0.1:" + strconv.Itoa(p)
	}
	return out
}

// StartCluster starts a private 3-master/3-replica cluster on free loopback ports (node timeout 1 s, so a killed
// master's replica is promoted within about 2 s) and stops it when the test ends. Skipped (failed in CI) if
// redis-server or redis-cli is missing.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	for _, bin := range []string{"redis-server", "redis-cli"} {
		if _, err := exec.LookPath(bin); err != nil {
			Unavailable(t, "%s not installed", bin)
		}
	}
	c := &Cluster{Dir: t.TempDir(), procs: map[int]*exec.Cmd{}}
	for len(c.Ports) < 6 {
		p := freePort(t)
		if p+10000 > 65535 {
			continue
		}
		c.Ports = append(c.Ports, p)
	}
	t.Cleanup(c.stopAll)
	for _, p := range c.Ports {
		c.start(t, p)
	}
	for _, p := range c.Ports {
		waitUp(t, "127.0.0.1:"+strconv.Itoa(p))
	}
	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "1", "--cluster-yes")
	if out, err := exec.Command("redis-cli", args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	c.WaitOK(t, 20*time.Second)
	c.WaitReplicasSynced(t, 20*time.Second)
	return c
}

// WaitReplicasSynced waits until every live replica reports master_link_status:up, so a master killed after it
// returns has a replica that can take over.
func (c *Cluster) WaitReplicasSynced(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		synced, replicas := 0, 0
		for p := range c.procs {
			out, err := c.Command(p, "INFO", "replication")
			if err != nil || !strings.Contains(out, "role:slave") {
				continue
			}
			replicas++
			if strings.Contains(out, "master_link_status:up") {
				synced++
			}
		}
		if replicas == 3 && synced == 3 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d replicas synced after %s", synced, replicas, timeout)
		}
		time.Sleep(50 * time.Millisecond) // waiting for real processes, not for a fake clock
	}
}

func (c *Cluster) start(t testing.TB, port int) {
	t.Helper()
	dir := filepath.Join(c.Dir, strconv.Itoa(port))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("redis-server", "--bind", "127.0.0.1", "--port", strconv.Itoa(port), "--dir", dir,
		"--save", "", "--appendonly", "no", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
		"--cluster-node-timeout", "1000", "--maxmemory-policy", "noeviction", "--logfile", filepath.Join(dir, "redis.log"),
		// Replicas sync at once (the default waits 5s to batch diskless transfers), and a replica may take over
		// however long its link was down (a replica still syncing when its master dies would otherwise never).
		"--repl-diskless-sync-delay", "0", "--cluster-replica-validity-factor", "0")
	if err := cmd.Start(); err != nil {
		t.Fatalf("redis-server: %v", err)
	}
	c.procs[port] = cmd
}

// Restart starts the node on port again, with its directory (and nodes.conf) as it was: a killed master rejoins
// as a replica of the node promoted in its place.
func (c *Cluster) Restart(t testing.TB, port int) {
	t.Helper()
	c.start(t, port)
	waitUp(t, "127.0.0.1:"+strconv.Itoa(port))
}

// Kill sends SIGKILL to the node on port and reaps it.
func (c *Cluster) Kill(port int) {
	if p := c.procs[port]; p != nil {
		_ = p.Process.Signal(syscall.SIGKILL)
		_ = p.Wait()
		delete(c.procs, port)
	}
}

func (c *Cluster) stopAll() {
	for p := range c.procs {
		c.Kill(p)
	}
}

// Command runs one command on the node at port (see command) and returns its text reply.
func (c *Cluster) Command(port int, args ...string) (string, error) {
	return command("127.0.0.1:"+strconv.Itoa(port), args...)
}

// WaitOK waits until every live node reports cluster_state:ok.
func (c *Cluster) WaitOK(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		ok := true
		for p := range c.procs {
			out, err := c.Command(p, "CLUSTER", "INFO")
			if err != nil || !strings.Contains(out, "cluster_state:ok") {
				ok = false
				break
			}
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("cluster not ok after %s", timeout)
		}
		time.Sleep(50 * time.Millisecond) // waiting for real processes, not for a fake clock
	}
}

// MasterOf reports the port of the master serving slot.
func (c *Cluster) MasterOf(t testing.TB, slot int) int {
	t.Helper()
	for p := range c.procs {
		out, err := c.Command(p, "CLUSTER", "NODES")
		if err != nil {
			continue
		}
		for _, line := range strings.Split(out, "\n") {
			f := strings.Fields(line)
			if len(f) < 9 || !strings.Contains(f[2], "master") || strings.Contains(f[2], "fail") {
				continue
			}
			for _, r := range f[8:] {
				lo, hi, found := strings.Cut(r, "-")
				a, _ := strconv.Atoi(lo)
				b := a
				if found {
					b, _ = strconv.Atoi(hi)
				}
				if slot >= a && slot <= b {
					addr := f[1]
					if i := strings.IndexByte(addr, '@'); i >= 0 {
						addr = addr[:i]
					}
					_, ps, _ := net.SplitHostPort(addr)
					port, _ := strconv.Atoi(ps)
					return port
				}
			}
		}
		return 0
	}
	return 0
}

func freePort(t testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func waitUp(t testing.TB, addr string) {
	t.Helper()
	for i := 0; i < 200; i++ {
		if ping(addr) == nil {
			return
		}
		time.Sleep(25 * time.Millisecond) // a process starting, not a clock
	}
	t.Fatalf("redis-server at %s did not answer", addr)
}
