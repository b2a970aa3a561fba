package pgtest

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"time"
)

// Cluster is a private PostgreSQL server for one test: its own data directory and port, so the test may stop and
// start it without touching the shared server.
type Cluster struct {
	t    testing.TB
	dir  string // owned by the server's OS user
	bin  string
	port int
	as   *user.User // run server commands as this user (postgres) when the test runs as root
}

// StartCluster runs initdb into a new temporary directory and starts the server on a free port. The cluster is
// stopped and removed when the test ends. It takes about a second.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	bin, err := binDir()
	if err != nil {
		Unavailable(t, "cannot run a private PostgreSQL cluster: %v", err)
	}
	c := &Cluster{t: t, bin: bin, port: FreePort(t)}
	if os.Geteuid() == 0 {
		// initdb refuses to run as root: the cluster belongs to the postgres user.
		c.as, err = user.Lookup("postgres")
		if err != nil {
			Unavailable(t, "running as root and there is no postgres user for initdb: %v", err)
		}
	}
	c.dir, err = os.MkdirTemp("", "sluice-pgtest-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.run(10*time.Second, "pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "stop")
		os.RemoveAll(c.dir)
	})
	if c.as != nil {
		uid, _ := strconv.Atoi(c.as.Uid)
		gid, _ := strconv.Atoi(c.as.Gid)
		if err := os.Chown(c.dir, uid, gid); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := c.run(60*time.Second, "initdb", "-D", c.data(), "-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C"); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	conf := fmt.Sprintf("\nport = %d\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\nfsync = off\nfull_page_writes = off\nmax_connections = 200\n", c.port)
	if out, err := c.run(10*time.Second, "sh", "-c", "cat >> "+shellQuote(filepath.Join(c.data(), "postgresql.conf"))+" <<'EOF'"+conf+"EOF\n"); err != nil {
		t.Fatalf("configure cluster: %v\n%s", err, out)
	}
	c.Start()
	return c
}

func (c *Cluster) data() string { return filepath.Join(c.dir, "data") }

// URL is the cluster's maintenance database.
func (c *Cluster) URL() string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", c.port)
}

// Port is the cluster's TCP port on 127.0.0.1.
func (c *Cluster) Port() int { return c.port }

// Start starts the server and waits until it accepts connections.
func (c *Cluster) Start() {
	c.t.Helper()
	if out, err := c.run(60*time.Second, "pg_ctl", "-D", c.data(), "-l", filepath.Join(c.dir, "server.log"), "-w", "-t", "60", "start"); err != nil {
		log, _ := os.ReadFile(filepath.Join(c.dir, "server.log"))
		c.t.Fatalf("pg_ctl start: %v\n%s\n%s", err, out, log)
	}
}

// Stop stops the server at once (mode immediate: connections are cut, as when a database host dies).
func (c *Cluster) Stop() {
	c.t.Helper()
	if out, err := c.run(60*time.Second, "pg_ctl", "-D", c.data(), "-m", "immediate", "-w", "stop"); err != nil {
		c.t.Fatalf("pg_ctl stop: %v\n%s", err, out)
	}
}

func (c *Cluster) run(timeout time.Duration, name string, args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if name != "sh" {
		name = filepath.Join(c.bin, name)
	}
	var cmd *exec.Cmd
	if c.as != nil {
		cmd = exec.CommandContext(ctx, "runuser", append([]string{"-u", c.as.Username, "--", name}, args...)...)
	} else {
		cmd = exec.CommandContext(ctx, name, args...)
	}
	cmd.Dir = c.dir
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// binDir finds the directory of initdb and pg_ctl: PG_BINDIR, then PATH, then the newest
// /usr/lib/postgresql/*/bin (Debian keeps them off PATH).
func binDir() (string, error) {
	if d := os.Getenv("PG_BINDIR"); d != "" {
		return d, nil
	}
	if p, err := exec.LookPath("initdb"); err == nil {
		return filepath.Dir(p), nil
	}
	dirs, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	sort.Slice(dirs, func(i, j int) bool { return versionOf(dirs[i]) > versionOf(dirs[j]) })
	for _, d := range dirs {
		if _, err := os.Stat(filepath.Join(d, "initdb")); err == nil {
			return d, nil
		}
	}
	return "", fmt.Errorf("initdb not found (install PostgreSQL or set PG_BINDIR)")
}

func versionOf(binDir string) int {
	v, _ := strconv.Atoi(filepath.Base(filepath.Dir(binDir)))
	return v
}

func shellQuote(s string) string {
	return "'" + string(bytes.ReplaceAll([]byte(s), []byte("'"), []byte(`'\''`))) + "'"
}
