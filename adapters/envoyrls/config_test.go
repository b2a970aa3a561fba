package envoyrls_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/sluice-dev/sluice/adapters/envoyrls"
	"github.com/sluice-dev/sluice/domain"
)

func load(t *testing.T, yaml string) error {
	t.Helper()
	_, err := envoyrls.Load([]string{"f.yaml"}, map[string][]byte{"f.yaml": []byte(yaml)}, envoyrls.LoadOptions{})
	return err
}

// TestConfigErrors: every problem names the file, the line and the YAML path, and says what is valid.
func TestConfigErrors(t *testing.T) {
	for _, c := range []struct{ name, yaml, want string }{
		{"unknown top key", "domain: d\ndescriptor: []\n", `f.yaml:2: descriptor: unknown key "descriptor"`},
		{"unknown nested key", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: 1, burst: 2}\n",
			`f.yaml:4: descriptors[0].rate_limit.burst: unknown key "burst"`},
		{"bad unit", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: fortnight, requests_per_unit: 1}\n",
			`descriptors[0].rate_limit.unit: must be one of SECOND, MINUTE, HOUR, DAY, WEEK, MONTH, got "FORTNIGHT"`},
		{"year", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: year, requests_per_unit: 1}\n", "YEAR (365 days) is longer than sluice's longest window"},
		{"missing unit", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {requests_per_unit: 1}\n", `got "(none)"`},
		{"zero rpu", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: 0}\n", "requests_per_unit: must be at least 1"},
		{"negative rpu", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, requests_per_unit: -1}\n", "requests_per_unit: must be an integer from 1 to 4294967295"},
		{"unlimited with unit", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: second, unlimited: true}\n", "must not be set when unlimited is true"},
		{"quota_mode", "domain: d\ndescriptors:\n  - key: a\n    quota_mode: maybe\n    rate_limit: {unit: second, requests_per_unit: 1}\n", "quota_mode"},
		{"empty domain", "descriptors: []\n", "domain: must not be empty"},
		{"empty key", "domain: d\ndescriptors:\n  - value: x\n", "descriptors[0].key: must not be empty"},
		{"duplicate descriptor", "domain: d\ndescriptors:\n  - key: a\n  - key: a\n", `descriptors[1]: duplicate descriptor "a"`},
		{"replaces itself", "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {name: n, unit: second, requests_per_unit: 1, replaces: [{name: n}]}\n", "cannot replace itself"},
		{"share_threshold without wildcard", "domain: d\ndescriptors:\n  - key: a\n    value: b\n    share_threshold: true\n", "applies to wildcard values only"},
		{"not yaml", "domain: [\n", "not valid YAML"},
		{"bad bool", "domain: d\ndescriptors:\n  - key: a\n    shadow_mode: maybe\n", "shadow_mode: must be true or false"},
	} {
		err := load(t, c.yaml)
		var ce *envoyrls.ConfigError
		if !errors.As(err, &ce) || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(ce.Problems[0], "f.yaml") {
			t.Errorf("%s: got %v, want a ConfigError containing %q", c.name, err, c.want)
		}
	}
}

func TestConfigReportsEveryProblem(t *testing.T) {
	err := load(t, "domain: d\ndescriptors:\n  - key: a\n    rate_limit: {unit: parsec, requests_per_unit: 1}\n  - key: b\n    colour: red\n")
	var ce *envoyrls.ConfigError
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("got %v, want 2 problems", err)
	}
}

func TestDuplicateDomainAcrossFiles(t *testing.T) {
	_, err := envoyrls.Load([]string{"a.yaml", "b.yaml"}, map[string][]byte{"a.yaml": []byte("domain: d\n"), "b.yaml": []byte("domain: d\n")}, envoyrls.LoadOptions{})
	if err == nil || !strings.Contains(err.Error(), `b.yaml:1: domain: duplicate domain "d": already defined in a.yaml`) {
		t.Errorf("got %v", err)
	}
}

// TestAlgorithmChoice: fixed_window by default (parity), any sluice algorithm globally or per file.
func TestAlgorithmChoice(t *testing.T) {
	files := []string{"a.yaml", "b.yaml"}
	contents := map[string][]byte{
		"a.yaml": []byte("domain: a\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, requests_per_unit: 5}\n"),
		"b.yaml": []byte("domain: b\ndescriptors:\n  - key: k\n    rate_limit: {unit: minute, requests_per_unit: 5}\n"),
	}
	alg := func(rs *envoyrls.Rules, dom string) domain.Algorithm {
		r, _ := rs.Match(dom, []envoyrls.Entry{{Key: "k", Value: "v"}})
		return r.Policy.Algorithm
	}
	rs, err := envoyrls.Load(files, contents, envoyrls.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if alg(rs, "a") != domain.FixedWindow || alg(rs, "b") != domain.FixedWindow {
		t.Errorf("default: %s %s, want fixed_window", alg(rs, "a"), alg(rs, "b"))
	}
	rs, err = envoyrls.Load(files, contents, envoyrls.LoadOptions{Algorithm: domain.SlidingLog, FileAlgorithms: map[string]domain.Algorithm{"b.yaml": domain.SlidingWindow}})
	if err != nil {
		t.Fatal(err)
	}
	if alg(rs, "a") != domain.SlidingLog || alg(rs, "b") != domain.SlidingWindow {
		t.Errorf("chosen: %s %s, want sliding_log, sliding_window", alg(rs, "a"), alg(rs, "b"))
	}
	if _, err := envoyrls.Load(files, contents, envoyrls.LoadOptions{FileAlgorithms: map[string]domain.Algorithm{"c.yaml": domain.SlidingLog}}); err == nil || !strings.Contains(err.Error(), `no config file "c.yaml"`) {
		t.Errorf("unknown file: %v", err)
	}
}

// TestPolicyNamesStable: names depend on domain and descriptor path only, so a changed limit keeps its counts,
// and they are valid sluice policy names.
func TestPolicyNamesStable(t *testing.T) {
	a := "domain: Default/EG/http\ndescriptors:\n  - key: k\n    value: v\n    rate_limit: {unit: minute, requests_per_unit: 5}\n"
	b := strings.Replace(strings.Replace(a, "5", "9", 1), "minute", "hour", 1)
	name := func(y string) string {
		rs, err := envoyrls.Load([]string{"f"}, map[string][]byte{"f": []byte(y)}, envoyrls.LoadOptions{})
		if err != nil {
			t.Fatal(err)
		}
		r, _ := rs.Match("Default/EG/http", []envoyrls.Entry{{Key: "k", Value: "v"}})
		return r.Policy.Name
	}
	if name(a) != name(b) {
		t.Errorf("names differ: %s, %s", name(a), name(b))
	}
	if err := domain.ValidatePolicyName(name(a)); err != nil || !strings.HasPrefix(name(a), "rls.default-eg-http.") {
		t.Errorf("name %q: %v", name(a), err)
	}
}

// TestConfigFilesAsItsRuntime: every file of the directory and its subdirectories whatever the extension,
// symlinks to files followed, hidden names skipped (a ConfigMap's ..data and timestamped directories).
func TestConfigFilesAsItsRuntime(t *testing.T) {
	dir := t.TempDir()
	write := func(p, s string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, p), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The layout kubelet makes for a ConfigMap volume.
	write("..2026_12_01_20_00_00.123/config.yaml", "domain: cm\n")
	write("..2026_12_01_20_00_00.123/other.conf", "domain: other\n")
	must(t, os.Symlink("..2026_12_01_20_00_00.123", filepath.Join(dir, "..data")))
	must(t, os.Symlink("..data/config.yaml", filepath.Join(dir, "config.yaml")))
	must(t, os.Symlink("..data/other.conf", filepath.Join(dir, "other.conf")))
	write("sub/nested.yml", "domain: nested\n")
	write(".hidden.yaml", "domain: hidden\n")
	must(t, os.Symlink("sub", filepath.Join(dir, "linkeddir")))
	files, err := envoyrls.ConfigFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"config.yaml", "other.conf", "sub/nested.yml"}; !reflect.DeepEqual(files, want) {
		t.Errorf("files %v, want %v", files, want)
	}
	rs, err := envoyrls.LoadDir(dir, envoyrls.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"cm", "other", "nested"} {
		if !rs.HasDomain(d) {
			t.Errorf("domain %s not loaded", d)
		}
	}
	if rs.HasDomain("hidden") {
		t.Error("hidden file loaded")
	}
	if _, err := envoyrls.LoadDir(t.TempDir(), envoyrls.LoadOptions{}); err == nil || !strings.Contains(err.Error(), "holds no config file") {
		t.Errorf("empty dir: %v", err)
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// TestKeyUnambiguous: the key identifies the entries exactly (envoyproxy/ratelimit's key_value_ join would
// not), and a key past 512 bytes becomes a stable hash rather than an error.
func TestKeyUnambiguous(t *testing.T) {
	a := envoyrls.Key([]envoyrls.Entry{{"a_b", "c"}}, nil)
	b := envoyrls.Key([]envoyrls.Entry{{"a", "b_c"}}, nil)
	c := envoyrls.Key([]envoyrls.Entry{{"a", "b"}, {"c", ""}}, nil)
	d := envoyrls.Key([]envoyrls.Entry{{"a", "b;1:c=0:"}}, nil)
	if a == b || a == c || b == c || c == d {
		t.Errorf("keys collide: %q %q %q %q", a, b, c, d)
	}
	if a != "3:a_b=1:c;" {
		t.Errorf("encoding %q", a)
	}
	long := []envoyrls.Entry{{"PATH", strings.Repeat("x", 600)}}
	k1, k2 := envoyrls.Key(long, nil), envoyrls.Key(long, nil)
	if k1 != k2 || !strings.HasPrefix(k1, "sha256:") || len(k1) != 7+64 || domain.ValidateKey(k1) != nil {
		t.Errorf("long key %q", k1)
	}
	long2 := []envoyrls.Entry{{"PATH", strings.Repeat("x", 599) + "y"}}
	if envoyrls.Key(long2, nil) == k1 {
		t.Error("different long keys hash alike")
	}
	if s := envoyrls.Key([]envoyrls.Entry{{"k", "value1"}}, map[int]string{0: "value*"}); s != "1:k=6:value*;" {
		t.Errorf("share_threshold key %q", s)
	}
}

// TestShareThreshold: values matching a share_threshold wildcard share one counter.
func TestShareThreshold(t *testing.T) {
	y := "domain: d\ndescriptors:\n  - key: file\n    value: files*\n    share_threshold: true\n    rate_limit: {unit: minute, requests_per_unit: 1}\n  - key: path\n    value: p*\n    rate_limit: {unit: minute, requests_per_unit: 1}\n"
	rs, err := envoyrls.Load([]string{"f"}, map[string][]byte{"f": []byte(y)}, envoyrls.LoadOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := func(k, v string) string {
		e := []envoyrls.Entry{{k, v}}
		r, share := rs.Match("d", e)
		if r == nil {
			t.Fatalf("%s=%s matched nothing", k, v)
		}
		return envoyrls.Key(e, share)
	}
	if key("file", "files/a") != key("file", "files/b") {
		t.Error("share_threshold values count apart")
	}
	if key("path", "p/a") == key("path", "p/b") {
		t.Error("plain wildcard values share a counter")
	}
}

// TestConfigDirBounds: a mistaken directory fails with a message instead of being read whole; devices behind
// symlinks are not read.
func TestConfigDirBounds(t *testing.T) {
	dir := t.TempDir()
	must(t, os.Symlink("/dev/zero", filepath.Join(dir, "zero.yaml")))
	must(t, os.WriteFile(filepath.Join(dir, "config.yaml"), []byte("domain: d\n"), 0o644))
	files, err := envoyrls.ConfigFiles(dir)
	if err != nil || !reflect.DeepEqual(files, []string{"config.yaml"}) {
		t.Errorf("files %v, %v: want config.yaml only", files, err)
	}
	big := t.TempDir()
	must(t, os.WriteFile(filepath.Join(big, "huge.yaml"), make([]byte, 5<<20), 0o644))
	if _, err := envoyrls.LoadDir(big, envoyrls.LoadOptions{}); err == nil || !strings.Contains(err.Error(), "huge.yaml: larger than 4 MiB") {
		t.Errorf("huge file: %v", err)
	}
	many := t.TempDir()
	for i := range 1001 {
		must(t, os.WriteFile(filepath.Join(many, fmt.Sprintf("f%04d.yaml", i)), nil, 0o644))
	}
	if _, err := envoyrls.ConfigFiles(many); err == nil || !strings.Contains(err.Error(), "more than 1000 files") {
		t.Errorf("many files: %v", err)
	}
}
