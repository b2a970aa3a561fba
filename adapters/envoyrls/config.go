package envoyrls

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sluice-dev/sluice/domain"
)

// Unit is a rate_limit unit of envoyproxy/ratelimit and the window sluice gives it. The windows are the ones
// envoyproxy/ratelimit divides Unix time by (utils.UnitToDivider), so fixed_window counts the same epoch-aligned
// windows it counts.
type Unit struct {
	Name   string // SECOND, MINUTE, ...
	Window time.Duration
}

// units maps the upper-case unit names the config accepts (case-insensitive, as envoyproxy/ratelimit's
// strings.ToUpper lookup) to their windows. YEAR (365 d) is longer than sluice's longest window (31 d), so it is
// refused with a message rather than silently shortened.
var units = map[string]time.Duration{
	"SECOND": time.Second,
	"MINUTE": time.Minute,
	"HOUR":   time.Hour,
	"DAY":    24 * time.Hour,
	"WEEK":   7 * 24 * time.Hour,
	"MONTH":  30 * 24 * time.Hour,
}

// unitNames lists the accepted units for messages, shortest first.
const unitNames = "SECOND, MINUTE, HOUR, DAY, WEEK, MONTH"

// Rule is one rate_limit of a config file, resolved to the sluice policy that enforces it.
type Rule struct {
	// Policy is the sluice policy (name derived from domain and descriptor path: stable across restarts and
	// replicas, so a changed requests_per_unit keeps the keys' counts).
	Policy domain.Policy
	// Unit is the envoyproxy/ratelimit unit, reported back in current_limit.
	Unit Unit
	// RequestsPerUnit as written (also Policy.Limit).
	RequestsPerUnit uint32
	// Name is rate_limit.name (for replaces and current_limit.name); may be empty.
	Name      string
	Replaces  []string
	Unlimited bool
	// QuotaMode (quota_mode: true): a soft limit, as envoyproxy/ratelimit defines it: this descriptor over its
	// limit fails the request only when every quota-mode descriptor of the request is over (and no other is).
	QuotaMode bool
	// Path is "file: descriptors[0].descriptors[1]" for messages.
	Path string
}

// node is one level of a domain's descriptor tree.
type node struct {
	children  map[string]*node // by "key" or "key_value", as envoyproxy/ratelimit's map
	wildcards []string         // child map keys ending in '*', in file order
	rule      *Rule
	// sharePattern: share_threshold is set on this wildcard node: every value matching it shares one counter.
	sharePattern string
}

// Rules is a loaded set of config files: the descriptor trees of every domain.
type Rules struct {
	domains map[string]*node
	// Files are the files read, relative to the directory, sorted.
	Files []string
	// Policies counts the rate_limit entries that became policies.
	Policies int
	// Fingerprint is the SHA-256 of the files' names and contents: a reload whose fingerprint is unchanged has
	// nothing to do.
	Fingerprint string
}

// LoadOptions says how rate_limit entries become sluice policies.
type LoadOptions struct {
	// Algorithm for every policy (default fixed_window, as envoyproxy/ratelimit counts).
	Algorithm domain.Algorithm
	// FileAlgorithms overrides Algorithm for the files named (relative path as in Rules.Files).
	FileAlgorithms map[string]domain.Algorithm
	// FailureMode of every policy (default deny: the store's failure answers UNAVAILABLE, so that Envoy's
	// failure_mode_deny decides).
	FailureMode domain.FailureMode
	// Shadow puts every policy in shadow mode (envoyproxy/ratelimit's SHADOW_MODE): decided and counted, always
	// answered OK; for running sluice beside the service it replaces before it enforces.
	Shadow bool
}

// ConfigError lists every problem found in a config directory, each naming the file and the YAML path.
type ConfigError struct{ Problems []string }

func (e *ConfigError) Error() string {
	return "envoy ratelimit config: " + strings.Join(e.Problems, "; ")
}

func (e *ConfigError) add(file string, n *yaml.Node, path, format string, args ...any) {
	loc := file
	if n != nil && n.Line > 0 {
		loc += ":" + strconv.Itoa(n.Line)
	}
	if path != "" {
		loc += ": " + path
	}
	e.Problems = append(e.Problems, loc+": "+fmt.Sprintf(format, args...))
}

// ConfigFiles lists the files LoadDir reads from dir, relative to it and sorted. As envoyproxy/ratelimit's
// runtime (lyft/goruntime, filepath.Walk) it reads every file of the directory and its subdirectories, whatever
// its extension, following symlinks to files (a Kubernetes ConfigMap's visible `x.yaml -> ..data/x.yaml`) but not
// to directories. Unlike its default (RUNTIME_IGNOREDOTFILES=false), names starting with '.' are skipped, files
// and directories alike: a ConfigMap's `..data` and `..2026_...` directories hold a second copy of every file,
// which envoyproxy/ratelimit would load twice (a duplicate domain) unless RUNTIME_IGNOREDOTFILES=true is set.
func ConfigFiles(dir string) ([]string, error) {
	root, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, fmt.Errorf("rls.config_dir %q: %w", dir, err)
	}
	st, err := os.Stat(root)
	if err != nil {
		return nil, fmt.Errorf("rls.config_dir %q: %w", dir, err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("rls.config_dir %q: not a directory", dir)
	}
	var files []string
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if path == root {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		if d.Type()&fs.ModeSymlink != 0 {
			st, err := os.Stat(path)
			if err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			if !st.Mode().IsRegular() {
				return nil // as filepath.Walk, a symlinked directory is not descended; nor is a device read
			}
		} else if !d.Type().IsRegular() {
			return nil
		}
		if len(files) == maxFiles {
			return fmt.Errorf("more than %d files: is this the directory of envoyproxy/ratelimit config files?", maxFiles)
		}
		rel, _ := filepath.Rel(root, path)
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("rls.config_dir %q: %w", dir, err)
	}
	sort.Strings(files)
	return files, nil
}

// LoadDir reads every config file of dir (see ConfigFiles) and resolves it into Rules. Every problem of every file
// is reported at once, as a *ConfigError.
func LoadDir(dir string, opts LoadOptions) (*Rules, error) {
	names, contents, err := ReadDir(dir)
	if err != nil {
		return nil, err
	}
	if len(names) == 0 {
		return nil, fmt.Errorf("rls.config_dir %q: %w (envoyproxy/ratelimit YAML files, e.g. config.yaml)", dir, errNoFiles)
	}
	return Load(names, contents, opts)
}

// ReadDir returns the config files of dir (see ConfigFiles) and their contents, for Load.
func ReadDir(dir string) ([]string, map[string][]byte, error) {
	files, err := ConfigFiles(dir)
	if err != nil {
		return nil, nil, err
	}
	root, _ := filepath.EvalSymlinks(dir)
	contents := make(map[string][]byte, len(files))
	for _, f := range files {
		b, err := readFile(filepath.Join(root, filepath.FromSlash(f)))
		if err != nil {
			return nil, nil, fmt.Errorf("rls.config_dir %q: %s: %w", dir, f, err)
		}
		contents[f] = b
	}
	return files, contents, nil
}

// Load resolves config file contents (name → YAML) into Rules; names are used in messages and FileAlgorithms.
func Load(names []string, contents map[string][]byte, opts LoadOptions) (*Rules, error) {
	if opts.Algorithm == "" {
		opts.Algorithm = domain.FixedWindow
	}
	if opts.FailureMode == "" {
		opts.FailureMode = domain.FailDeny
	}
	errs := &ConfigError{}
	for name := range opts.FileAlgorithms {
		if _, ok := contents[name]; !ok {
			errs.Problems = append(errs.Problems, fmt.Sprintf("rls.file_algorithms: no config file %q (files: %s)", name, strings.Join(names, ", ")))
		}
	}
	rs := &Rules{domains: map[string]*node{}, Files: names, Fingerprint: fingerprint(names, contents)}
	domainFile := map[string]string{}
	for _, name := range names {
		alg := opts.Algorithm
		if a, ok := opts.FileAlgorithms[name]; ok {
			alg = a
		}
		l := loader{file: name, errs: errs, alg: alg, failure: opts.FailureMode, shadow: opts.Shadow, rules: rs}
		var doc yaml.Node
		if err := yaml.Unmarshal(contents[name], &doc); err != nil {
			errs.add(name, nil, "", "not valid YAML: %v", err)
			continue
		}
		if len(doc.Content) == 0 {
			errs.add(name, nil, "", "empty file: a config file needs a domain")
			continue
		}
		top := doc.Content[0]
		d, tree := l.root(top)
		if d == "" {
			continue
		}
		if prev, dup := domainFile[d]; dup {
			// envoyproxy/ratelimit refuses this too unless MERGE_DOMAIN_CONFIG is set.
			errs.add(name, top, "domain", "duplicate domain %q: already defined in %s", d, prev)
			continue
		}
		domainFile[d] = name
		rs.domains[d] = tree
	}
	if len(errs.Problems) > 0 {
		return nil, errs
	}
	return rs, nil
}

type loader struct {
	file    string
	errs    *ConfigError
	alg     domain.Algorithm
	failure domain.FailureMode
	shadow  bool
	rules   *Rules
}

// fields checks that n is a mapping with only the allowed keys and returns the value node of each key.
func (l *loader) fields(n *yaml.Node, path string, allowed ...string) map[string]*yaml.Node {
	if n.Kind != yaml.MappingNode {
		l.errs.add(l.file, n, path, "must be a mapping, got %s", kindName(n))
		return nil
	}
	out := map[string]*yaml.Node{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		ok := false
		for _, a := range allowed {
			ok = ok || k.Value == a
		}
		switch {
		case !ok:
			l.errs.add(l.file, k, join(path, k.Value), "unknown key %q (allowed here: %s)", k.Value, strings.Join(allowed, ", "))
		case out[k.Value] != nil:
			l.errs.add(l.file, k, join(path, k.Value), "duplicate key")
		default:
			out[k.Value] = v
		}
	}
	return out
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		return fmt.Sprintf("the scalar %q", n.Value)
	}
	return "an alias"
}

func (l *loader) str(n *yaml.Node, path string) string {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		l.errs.add(l.file, n, path, "must be a string, got %s", kindName(n))
		return ""
	}
	return n.Value
}

func (l *loader) boolean(n *yaml.Node, path string) bool {
	var b bool
	if n.Kind != yaml.ScalarNode || n.Decode(&b) != nil {
		l.errs.add(l.file, n, path, "must be true or false, got %s", kindName(n))
	}
	return b
}

func (l *loader) root(n *yaml.Node) (string, *node) {
	f := l.fields(n, "", "domain", "descriptors")
	if f == nil {
		return "", nil
	}
	var d string
	if f["domain"] != nil {
		d = l.str(f["domain"], "domain")
	}
	if d == "" {
		l.errs.add(l.file, n, "domain", "must not be empty: every config file names its domain")
		return "", nil
	}
	tree := &node{children: map[string]*node{}}
	if f["descriptors"] != nil {
		l.descriptors(d, tree, f["descriptors"], "descriptors", "")
	}
	return d, tree
}

func (l *loader) descriptors(dom string, parent *node, n *yaml.Node, path, idPath string) {
	if n.Tag == "!!null" {
		return
	}
	if n.Kind != yaml.SequenceNode {
		l.errs.add(l.file, n, path, "must be a list of descriptors, got %s", kindName(n))
		return
	}
	for i, dn := range n.Content {
		p := path + "[" + strconv.Itoa(i) + "]"
		f := l.fields(dn, p, "key", "value", "rate_limit", "descriptors", "shadow_mode", "quota_mode",
			"detailed_metric", "value_to_metric", "share_threshold")
		if f == nil {
			continue
		}
		var key, value string
		if f["key"] != nil {
			key = l.str(f["key"], p+".key")
		}
		if key == "" {
			l.errs.add(l.file, dn, p+".key", "must not be empty")
			continue
		}
		if f["value"] != nil {
			value = l.str(f["value"], p+".value")
		}
		mapKey := key
		if value != "" {
			mapKey += "_" + value
		}
		if parent.children[mapKey] != nil {
			l.errs.add(l.file, dn, p, "duplicate descriptor %q at this level", mapKey)
			continue
		}
		child := &node{children: map[string]*node{}}
		parent.children[mapKey] = child
		if strings.HasSuffix(mapKey, "*") {
			parent.wildcards = append(parent.wildcards, mapKey)
		}
		// The node's identity: the chain of key/value pairs from the domain down (wildcards as written).
		id := idPath + strconv.Itoa(len(key)) + ":" + key + "=" + strconv.Itoa(len(value)) + ":" + value + ";"
		var shadow, share, quota bool
		for _, b := range []string{"shadow_mode", "detailed_metric", "value_to_metric"} {
			if f[b] != nil {
				v := l.boolean(f[b], p+"."+b)
				if b == "shadow_mode" {
					shadow = v
				}
			}
		}
		if f["quota_mode"] != nil {
			quota = l.boolean(f["quota_mode"], p+".quota_mode")
		}
		if f["share_threshold"] != nil {
			share = l.boolean(f["share_threshold"], p+".share_threshold")
			if share && !strings.HasSuffix(mapKey, "*") {
				l.errs.add(l.file, f["share_threshold"], p+".share_threshold", "applies to wildcard values only (ending in '*'), not to %q", mapKey)
			}
			if share {
				child.sharePattern = value
			}
		}
		if f["rate_limit"] != nil {
			child.rule = l.rateLimit(dom, id, f["rate_limit"], p+".rate_limit", shadow)
			if child.rule != nil {
				child.rule.QuotaMode = quota
			}
		}
		if f["descriptors"] != nil {
			l.descriptors(dom, child, f["descriptors"], p+".descriptors", id)
		}
	}
}

func (l *loader) rateLimit(dom, id string, n *yaml.Node, path string, shadow bool) *Rule {
	f := l.fields(n, path, "unit", "requests_per_unit", "unlimited", "name", "replaces")
	if f == nil {
		return nil
	}
	r := &Rule{Path: l.file + ": " + path}
	if f["unlimited"] != nil {
		r.Unlimited = l.boolean(f["unlimited"], path+".unlimited")
	}
	if f["name"] != nil {
		r.Name = l.str(f["name"], path+".name")
	}
	if f["replaces"] != nil {
		rn := f["replaces"]
		if rn.Kind != yaml.SequenceNode {
			l.errs.add(l.file, rn, path+".replaces", "must be a list of {name: ...}, got %s", kindName(rn))
		} else {
			for i, e := range rn.Content {
				ep := path + ".replaces[" + strconv.Itoa(i) + "]"
				ef := l.fields(e, ep, "name")
				if ef == nil {
					continue
				}
				var name string
				if ef["name"] != nil {
					name = l.str(ef["name"], ep+".name")
				}
				switch {
				case name == "":
					l.errs.add(l.file, e, ep+".name", "must not be empty")
				case name == r.Name:
					l.errs.add(l.file, e, ep+".name", "a rate limit cannot replace itself (%q)", name)
				default:
					r.Replaces = append(r.Replaces, name)
				}
			}
		}
	}
	var unit string
	if f["unit"] != nil {
		unit = strings.ToUpper(l.str(f["unit"], path+".unit"))
	}
	window, ok := units[unit]
	if r.Unlimited {
		if ok {
			l.errs.add(l.file, f["unit"], path+".unit", "must not be set when unlimited is true")
		}
		return r
	}
	switch {
	case unit == "YEAR":
		l.errs.add(l.file, f["unit"], path+".unit", "YEAR (365 days) is longer than sluice's longest window (31 days); use MONTH (30 days) or a shorter unit")
	case !ok:
		got := unit
		if f["unit"] == nil {
			got = "(none)"
		}
		l.errs.add(l.file, n, path+".unit", "must be one of %s, got %q", unitNames, got)
	}
	var rpu uint64
	if f["requests_per_unit"] == nil {
		l.errs.add(l.file, n, path+".requests_per_unit", "missing: the number of requests admitted per unit")
	} else {
		v := f["requests_per_unit"]
		var err error
		rpu, err = strconv.ParseUint(v.Value, 10, 32)
		if v.Kind != yaml.ScalarNode || err != nil {
			l.errs.add(l.file, v, path+".requests_per_unit", "must be an integer from 1 to %d, got %s", uint32(math.MaxUint32), kindName(v))
		} else if rpu == 0 {
			l.errs.add(l.file, v, path+".requests_per_unit", "must be at least 1 (0 would deny every request; sluice's limits start at 1)")
		}
	}
	if !ok || rpu == 0 {
		return nil
	}
	r.Unit = Unit{Name: unit, Window: window}
	r.RequestsPerUnit = uint32(rpu)
	r.Policy = domain.Policy{
		Name:        policyName(dom, id),
		Limit:       int64(rpu),
		Window:      window,
		Algorithm:   l.alg,
		FailureMode: l.failure,
		Shadow:      shadow || l.shadow,
		Source:      domain.SourceConfig,
	}.WithDefaults()
	if err := r.Policy.Validate(path + "."); err != nil {
		l.errs.add(l.file, n, path, "%v", err)
		return nil
	}
	l.rules.Policies++
	return r
}

// policyName derives a sluice policy name from the domain and a node's identity: "rls." + a readable part of the
// domain + "." + 16 hex digits of SHA-256(domain, identity). It matches ^[a-z0-9][a-z0-9_.-]{0,63}$, is the same
// on every replica and restart, and does not depend on the limit or unit, so changing them keeps the counts.
func policyName(dom, id string) string {
	h := sha256.Sum256([]byte(strconv.Itoa(len(dom)) + ":" + dom + ";" + id))
	return "rls." + readable(dom, 40) + "." + hex.EncodeToString(h[:8])
}

// overridePolicyName is the policy of a descriptor's limit override: one per (domain, unit), the state keyed by
// the descriptor's entries, as envoyproxy/ratelimit keys its counters by domain, entries and unit.
func overridePolicyName(dom string, unit string) string {
	h := sha256.Sum256([]byte("override;" + strconv.Itoa(len(dom)) + ":" + dom + ";" + unit))
	return "rls-override." + readable(dom, 30) + "." + hex.EncodeToString(h[:8])
}

func readable(s string, max int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < max; i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '-':
			b.WriteByte(c)
		case c >= 'A' && c <= 'Z':
			b.WriteByte(c + 'a' - 'A')
		default:
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return "x"
	}
	return b.String()
}

func fingerprint(names []string, contents map[string][]byte) string {
	h := sha256.New()
	for _, n := range names {
		h.Write([]byte(strconv.Itoa(len(n)) + ":" + n + strconv.Itoa(len(contents[n])) + ":"))
		h.Write(contents[n])
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Bounds on a config directory, so that a mistaken rls.config_dir (say "/") fails with a message instead of reading
// a filesystem.
const (
	maxFiles     = 1000
	maxFileBytes = 4 << 20
)

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxFileBytes {
		return nil, fmt.Errorf("larger than %d MiB: not an envoyproxy/ratelimit config file", maxFileBytes>>20)
	}
	return b, nil
}

// errNoFiles is returned when the directory holds no config file.
var errNoFiles = errors.New("holds no config file")
