package app

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.yaml.in/yaml/v3"

	"github.com/sluice-dev/sluice/domain"
)

// UnmarshalYAML reads a duration string ("250ms", "5m", "7d") for callers that decode a Duration with yaml
// directly; Load reads every setting through its rule instead (settings.go).
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := parseSignedDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return fmt.Errorf("line %d: want a duration such as 250ms, 30s, 5m or 7d", n.Line)
	}
	*d = Duration(v)
	return nil
}

// MarshalYAML writes the duration back in the form it is read.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

func (d Duration) String() string {
	if d < 0 {
		return "-" + domain.FormatDuration(-time.Duration(d))
	}
	return domain.FormatDuration(time.Duration(d))
}

// parseSignedDuration is domain.ParseDuration with an optional sign.
func parseSignedDuration(s string) (time.Duration, error) {
	neg := strings.HasPrefix(s, "-")
	d, err := domain.ParseDuration(strings.TrimLeft(s, "+-"))
	if neg {
		d = -d
	}
	return d, err
}

// Problems lists every configuration problem found, each naming the setting as the user wrote it (a YAML path
// with its line, or an environment variable) and the valid values.
type Problems []string

func (p Problems) Error() string {
	return "invalid configuration:\n  - " + strings.Join(p, "\n  - ")
}

// slidingLogWarnLimit is the limit above which a sliding_log policy draws a warning: its state per key (and the
// work of each Postgres check) grows with the limit, where sliding_window's is bounded by window/resolution + 1.
const slidingLogWarnLimit = 1000

// Load reads the config file at path (none when empty), applies the SLUICE_* variables of environ ("NAME=value"
// entries, as os.Environ returns them), loads the tokens file, and validates everything. The error is Problems
// listing every problem at once; warnings are advice that does not stop start-up.
//
// The file is decoded into a yaml.Node tree and walked against Config's type, so each value is read by its
// field's rule (settings.go) and named by its path and line, and a bad value never hides the problems after it.
func Load(path string, environ []string) (cfg Config, warnings []string, err error) {
	return load(path, environ, loadOptions{})
}

// loadOptions are what the ratelimit drop-in (ratelimit.go) adds to Load.
type loadOptions struct {
	// shown names SLUICE_* variables made from envoyproxy/ratelimit's in messages, as the operator wrote them.
	shown map[string]shownAs
	// ratelimit marks the drop-in's configuration (Config.ratelimit).
	ratelimit bool
}

// load is Load with the ratelimit drop-in's options (LoadRatelimit).
func load(path string, environ []string, o loadOptions) (cfg Config, warnings []string, err error) {
	l := &loader{file: path, cur: path, origins: map[string]origin{}, bad: map[string]bool{}, renames: map[string]string{}, shown: o.shown}
	cfg = Defaults()
	cfg.ratelimit = o.ratelimit
	if path != "" {
		if data, err := os.ReadFile(path); err != nil {
			l.report(0, fmt.Sprintf("config file: %v", err))
		} else if root := l.parseFile(data, path); root != nil {
			l.decodeStruct(root, reflect.ValueOf(&cfg).Elem(), "")
		}
	}
	l.applyEnv(&cfg, environ)
	var traceProblems []string
	cfg.traces, traceProblems = readTraceEnv(environMap(environ))
	for _, p := range traceProblems {
		l.report(0, p)
	}
	if cfg.TokensFile != "" && !l.isBad("tokens_file") {
		l.loadTokens(&cfg)
	}
	l.validate(cfg)
	cfg.source = path
	if len(l.probs) > 0 {
		return cfg, nil, l.sorted()
	}
	return cfg, l.warnings(cfg), nil
}

// origin is where a setting's value came from, for messages.
type origin struct {
	file   string // the YAML file it was read from
	line   int
	env    string // or the variable that set it
	value  string
	secret bool
}

type loader struct {
	file    string // the config file
	cur     string // the file being decoded (the config file or the tokens file)
	probs   Problems
	lines   []int              // per problem: its line in the config file, 0 for others
	origins map[string]origin  // path ("policies[2].limit") → where its value came from
	bad     map[string]bool    // paths whose value could not be read: later checks do not report them again
	renames map[string]string  // "tokens[3]" → "tokens_file[0]": how a path is shown
	shown   map[string]shownAs // SLUICE_* variable → the envoyproxy/ratelimit variables it was made from
}

// parent is the path one level up: "policies[2].limit" → "policies[2]" → "policies" → "".
func parent(path string) string {
	if i := strings.LastIndexAny(path, ".["); i >= 0 {
		return path[:i]
	}
	return ""
}

func (l *loader) isBad(path string) bool {
	for p := path; p != ""; p = parent(p) {
		if l.bad[p] {
			return true
		}
	}
	return false
}

// name shows a path as the user wrote it: `SLUICE_STORE="x"`, "policies[2].limit (line 9)", or the path alone
// for a default. A path not written in the file takes the line of the nearest enclosing item.
func (l *loader) name(path string) string {
	shown := path
	for from, to := range l.renames {
		if path == from || strings.HasPrefix(path, from+".") {
			shown = to + path[len(from):]
		}
	}
	if o, ok := l.origins[path]; ok && o.env != "" {
		if o.secret {
			return o.env
		}
		return o.env + "=" + strconv.Quote(o.value)
	}
	for p := path; ; p = parent(p) {
		if o, ok := l.origins[p]; ok && o.line > 0 {
			if shown == "" {
				return fmt.Sprintf("%s (line %d)", o.file, o.line)
			}
			if o.file != l.file {
				return fmt.Sprintf("%s (%s line %d)", shown, o.file, o.line)
			}
			return fmt.Sprintf("%s (line %d)", shown, o.line)
		}
		if p == "" {
			break
		}
	}
	if shown == "" {
		return l.cur
	}
	return shown
}

// fail reports that the value at path (line) could not be read; nothing else is reported about it.
func (l *loader) fail(path string, line int, msg string) {
	if _, ok := l.origins[path]; !ok && line > 0 {
		l.origins[path] = origin{file: l.cur, line: line}
	}
	l.bad[path] = true
	l.report(l.lineOf(path), l.name(path)+": "+msg)
}

// report adds a problem; line (in the config file, or 0) orders it: the file's problems come in the file's order,
// then the others (environment, tokens file, defaults) in the order found.
func (l *loader) report(line int, msg string) {
	l.probs = append(l.probs, msg)
	l.lines = append(l.lines, line)
}

// sorted returns the problems in report order.
func (l *loader) sorted() Problems {
	idx := make([]int, len(l.probs))
	for i := range idx {
		idx[i] = i
	}
	key := func(i int) int {
		if l.lines[i] > 0 {
			return l.lines[i]
		}
		return math.MaxInt
	}
	slices.SortStableFunc(idx, func(a, b int) int { return cmp.Compare(key(a), key(b)) })
	out := make(Problems, len(idx))
	for i, j := range idx {
		out[i] = l.probs[j]
	}
	return out
}

// lineOf is the config-file line a path's name shows, or 0.
func (l *loader) lineOf(path string) int {
	if o, ok := l.origins[path]; ok && o.env != "" {
		return 0
	}
	for p := path; ; p = parent(p) {
		if o, ok := l.origins[p]; ok && o.line > 0 {
			if o.file != l.file {
				return 0
			}
			return o.line
		}
		if p == "" {
			return 0
		}
	}
}

// add reports a problem with a value that was read, unless reading it already failed.
func (l *loader) add(path, format string, args ...any) {
	if l.isBad(path) {
		return
	}
	l.report(l.lineOf(path), l.name(path)+": "+fmt.Sprintf(format, args...))
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// parseFile reads the one YAML document of file: its root node, or nil when the file is empty or not YAML
// (reported).
func (l *loader) parseFile(data []byte, file string) *yaml.Node {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if !errors.Is(err, io.EOF) {
			l.report(0, fmt.Sprintf("%s: not valid YAML: %v", file, err))
		}
		return nil
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		l.report(next.Line, fmt.Sprintf("%s (line %d): a second YAML document: sluice reads one document per file", file, next.Line))
	case !errors.Is(err, io.EOF):
		l.report(0, fmt.Sprintf("%s: not valid YAML: %v", file, err))
	}
	if len(doc.Content) == 0 {
		return nil
	}
	return doc.Content[0]
}

// resolve follows aliases (*name) to the anchored node.
func resolve(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 100; i++ {
		n = n.Alias
	}
	return n
}

func isNull(n *yaml.Node) bool {
	return n == nil || n.Kind == yaml.AliasNode || (n.Kind == yaml.ScalarNode && n.Tag == "!!null")
}

// describe shows a node in a message: a scalar as written (strings quoted), otherwise its kind.
func describe(n *yaml.Node, secret bool) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	if secret {
		return ""
	}
	if n.Tag == "!!str" || n.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 {
		return strconv.Quote(n.Value)
	}
	return n.Value
}

type entry struct {
	key, value *yaml.Node
	merged     bool // from a << merge key: the mapping's own keys override it
}

// entries lists a mapping's keys and values, with YAML merge keys (<<: *defaults) expanded after its own.
func (l *loader) entries(n *yaml.Node, path string, depth int) []entry {
	var own, merged []entry
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.Tag == "!!merge" {
			src := resolve(v)
			var maps []*yaml.Node
			switch {
			case src != nil && src.Kind == yaml.MappingNode:
				maps = []*yaml.Node{src}
			case src != nil && src.Kind == yaml.SequenceNode:
				for _, item := range src.Content {
					if m := resolve(item); m != nil && m.Kind == yaml.MappingNode {
						maps = append(maps, m)
					}
				}
			}
			if len(maps) == 0 || depth > 10 {
				l.fail(join(path, "<<"), k.Line, "want a mapping (or a list of mappings) to merge")
				continue
			}
			for _, m := range maps {
				for _, e := range l.entries(m, path, depth+1) {
					e.merged = true
					merged = append(merged, e)
				}
			}
			continue
		}
		own = append(own, entry{key: k, value: v})
	}
	return append(own, merged...)
}

// decodeStruct reads a mapping of settings into v, a struct whose fields are named by their yaml tags.
func (l *loader) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	t := v.Type()
	if n.Kind != yaml.MappingNode {
		l.fail(path, n.Line, fmt.Sprintf("want a mapping of settings (%s), got %s", strings.Join(yamlKeys(t), ", "), describe(n, false)))
		return
	}
	seen := map[string]int{}
	for _, e := range l.entries(n, path, 0) {
		if e.key.Kind != yaml.ScalarNode {
			l.fail(path, e.key.Line, "a key must be a setting's name, got "+describe(e.key, false))
			continue
		}
		key := e.key.Value
		p := join(path, key)
		if first, dup := seen[key]; dup {
			if !e.merged {
				l.bad[p] = true
				l.report(e.key.Line, fmt.Sprintf("%s (line %d): set twice (first at line %d)", p, e.key.Line, first))
			}
			continue
		}
		seen[key] = e.key.Line
		i := fieldByYAML(t, key)
		if i < 0 {
			l.fail(p, e.key.Line, fmt.Sprintf("unknown setting %q (valid here: %s)", key, strings.Join(yamlKeys(t), ", ")))
			continue
		}
		l.origins[p] = origin{file: l.cur, line: e.key.Line}
		f := t.Field(i)
		switch {
		case f.Type.Kind() == reflect.Struct && f.Type != durationType:
			l.decodeStruct(e.value, v.Field(i), p)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			l.decodeList(e.value, v.Field(i), p, 0)
		default:
			l.decodeValue(e.value, v.Field(i), ruleOf(f), p)
		}
	}
}

func fieldByYAML(t reflect.Type, key string) int {
	for i := 0; i < t.NumField(); i++ {
		if yamlName(t.Field(i)) == key {
			return i
		}
	}
	return -1
}

// decodeList reads a list of mappings into v (a slice of structs), replacing what it held; item i is named
// path[first+i].
func (l *loader) decodeList(n *yaml.Node, v reflect.Value, path string, first int) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	if n.Kind != yaml.SequenceNode {
		l.fail(path, n.Line, fmt.Sprintf("want a list of mappings (%s), got %s", strings.Join(yamlKeys(v.Type().Elem()), ", "), describe(n, false)))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		p := fmt.Sprintf("%s[%d]", path, first+i)
		l.origins[p] = origin{file: l.cur, line: item.Line}
		l.decodeStruct(item, s.Index(i), p)
	}
	v.Set(s)
}

// decodeValue reads one scalar (or a list of strings) through the field's rule.
func (l *loader) decodeValue(n *yaml.Node, v reflect.Value, r rule, path string) {
	n = resolve(n)
	if isNull(n) {
		return
	}
	if r.isList() && n.Kind == yaml.SequenceNode {
		items := reflect.MakeSlice(r.typ, 0, len(n.Content))
		for i, item := range n.Content {
			if item = resolve(item); item == nil || item.Kind != yaml.ScalarNode {
				l.fail(fmt.Sprintf("%s[%d]", path, i), n.Line, "want a string, got "+describe(item, false))
				return
			}
			items = reflect.Append(items, reflect.ValueOf(item.Value).Convert(r.typ.Elem()))
		}
		v.Set(items)
		return
	}
	if n.Kind != yaml.ScalarNode {
		l.fail(path, n.Line, fmt.Sprintf("want %s, got %s", r.want(), describe(n, false)))
		return
	}
	if err := r.parse(v, n.Value, describe(n, r.secret)); err != nil {
		l.fail(path, n.Line, err.Error())
	}
}

// applyEnv reads every setting's variable (or an alias) through the setting's rule, and refuses unknown SLUICE_*
// variables, naming the closest valid one.
func (l *loader) applyEnv(cfg *Config, environ []string) {
	env := environMap(environ)
	known := map[string]bool{configVariable: true}
	for _, s := range settingsTable {
		known[s.env] = true
		for _, a := range s.aliases {
			known[a] = true
		}
	}
	for _, k := range sortedKeys(env) {
		if strings.HasPrefix(k, "SLUICE_") && !known[k] {
			if msg := envProblem(k); msg != "" {
				l.report(0, msg)
			}
		}
	}
	root := reflect.ValueOf(cfg).Elem()
	for _, s := range settingsTable {
		name := s.env
		v, ok := env[s.env]
		conflict := false
		for _, a := range s.aliases {
			av, set := env[a]
			switch {
			case !set:
			case !ok:
				name, v, ok = a, av, true
			case av != v:
				l.bad[s.path] = true
				l.report(0, fmt.Sprintf("%s and %s are both set, to different values (%s is the older name of %s, setting %s): unset one", name, a, a, s.env, s.path))
				conflict = true
			}
		}
		if !ok || conflict {
			continue
		}
		got := strconv.Quote(v)
		shownName, shownValue, secret := name, v, s.rule.secret
		if sh, ok := l.shown[name]; ok { // made from envoyproxy/ratelimit's variables: name those
			shownName, shownValue, secret = sh.name, sh.value, secret || sh.secret
			got = strconv.Quote(sh.value)
		}
		if secret {
			got = ""
		}
		if err := s.rule.parse(root.FieldByIndex(s.index), v, got); err != nil {
			l.bad[s.path] = true
			l.report(0, shownName+": "+err.Error())
			continue
		}
		l.origins[s.path] = origin{env: shownName, value: shownValue, secret: secret}
	}
}

// loadTokens appends the tokens file's list to cfg.Tokens; its items are named tokens_file[i], with the file's
// lines.
func (l *loader) loadTokens(cfg *Config) {
	file := cfg.TokensFile
	data, err := os.ReadFile(file)
	if err != nil {
		l.add("tokens_file", "cannot read it: %v", err)
		return
	}
	root := resolve(l.parseFile(data, file))
	if isNull(root) {
		return
	}
	if root.Kind != yaml.SequenceNode {
		got := describe(root, true)
		if got == "" {
			got = "a single value (not shown: it may be a secret)"
		}
		l.add("tokens_file", "%s (line %d): want a YAML list of {name, token, role}, got %s", file, root.Line, got)
		return
	}
	base := len(cfg.Tokens)
	var toks []TokenConfig
	l.cur = file
	l.decodeList(root, reflect.ValueOf(&toks).Elem(), "tokens", base)
	l.cur = l.file
	for j := range toks {
		l.renames[fmt.Sprintf("tokens[%d]", base+j)] = fmt.Sprintf("tokens_file[%d]", j)
	}
	cfg.Tokens = append(cfg.Tokens, toks...)
}

// validate checks every value that was read: each field's rule, then the rules that involve several settings or
// the domain. Every problem is reported, each once.
func (l *loader) validate(c Config) {
	l.checkRules(reflect.ValueOf(c), "")
	host, port, err := net.SplitHostPort(c.Listen)
	if err != nil {
		l.add("listen", "want host:port such as 127.0.0.1:8080 or 0.0.0.0:8080, got %q", c.Listen)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		l.add("listen", "port must be 0-65535, got %q", port)
	}
	l.checkPostgresURL(c)
	if d, ok := storeDriverNamed(c.Store); ok && d.Validate != nil {
		d.Validate(c, l.add)
	}
	if c.Postgres.MaxConns >= 1 && (c.Postgres.Lanes < 0 || c.Postgres.Lanes > c.Postgres.MaxConns) {
		l.add("postgres.lanes", "must be 0 (automatic: min(%d, max_conns)) to max_conns (%d), got %d", DefaultLanes, c.Postgres.MaxConns, c.Postgres.Lanes)
	}
	names := map[string]int{}
	secrets := map[string]bool{}
	for i, t := range c.Tokens {
		at := fmt.Sprintf("tokens[%d]", i)
		switch first, dup := names[t.Name]; {
		case strings.TrimSpace(t.Name) == "":
			l.add(at+".name", "required: a label for the token in logs, such as the client's name")
		case dup:
			l.add(at+".name", "duplicate token name %q (also %s)", t.Name, l.name(fmt.Sprintf("tokens[%d]", first)))
		default:
			names[t.Name] = i
		}
		switch {
		case t.Token == "":
			l.add(at+".token", "required: a random secret of at least 16 characters")
		case strings.IndexFunc(t.Token, func(r rune) bool { return r <= ' ' || r > '~' }) >= 0:
			l.add(at+".token", "must be printable ASCII without spaces (it travels in an Authorization header; a trailing newline from a secret file?)")
		case len(t.Token) < 16:
			l.add(at+".token", "must be at least 16 characters (use a random secret)")
		case secrets[t.Token]:
			l.add(at+".token", "the same secret appears twice")
		}
		secrets[t.Token] = true
	}
	if len(c.Tokens) == 0 && err == nil && !isLoopback(host) && !c.ratelimit { // the drop-in serves only probes there
		l.add("listen", "%q is not a loopback address and no tokens are configured: set tokens or tokens_file (SLUICE_TOKENS_FILE), or listen on 127.0.0.1", c.Listen)
	}
	validateHTTPTLS(c, l.add)
	validateRLS(c, l.add)
	policies := make([]domain.Policy, len(c.Policies))
	driver, _ := storeDriverNamed(c.Store)
	for i, pc := range c.Policies {
		at := fmt.Sprintf("policies[%d]", i)
		if pc.Period != "" || pc.TimeZone != "" || pc.Anchor != "" {
			switch {
			case pc.Period == "":
				l.add(at+".period", "time_zone and anchor apply to a calendar period: set period (day, week or month)")
			case pc.Window != 0:
				l.add(at+".window", "give either a window or a period, not both")
			case !driver.Calendars:
				l.add(at+".period", "calendar periods are not decided by the %s store yet (the memory store decides them)", c.Store)
			}
			if _, err := domain.LoadTimeZone(pc.TimeZone); err != nil {
				l.add(at+".time_zone", "%v", err)
			}
			if pc.Anchor != "" {
				if _, err := time.Parse(time.RFC3339, pc.Anchor); err != nil {
					l.add(at+".anchor", "must be an RFC 3339 instant such as 2026-01-31T00:00:00-05:00, got %q", pc.Anchor)
				}
			}
		}
		policies[i] = pc.domain()
	}
	fixed, err := domain.ConfigPolicies(policies)
	if err == nil {
		err = domain.ValidateConfigOverrides(fixed, c.overrides(), driver.Shared)
	}
	if err != nil {
		var ve *domain.ValidationError
		if !errors.As(err, &ve) {
			l.add("policies", "%v", err)
		} else {
			for _, f := range ve.Fields {
				l.add(f.Field, "%s", f.Detail)
			}
		}
	}
}

// checkRules applies each field's rule (range, oneof) to the value read, through nested structs and lists.
func (l *loader) checkRules(v reflect.Value, path string) {
	t := v.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name := yamlName(f)
		if name == "" {
			continue
		}
		p := join(path, name)
		switch {
		case f.Type.Kind() == reflect.Struct && f.Type != durationType:
			l.checkRules(v.Field(i), p)
		case f.Type.Kind() == reflect.Slice && f.Type.Elem().Kind() == reflect.Struct:
			for j := 0; j < v.Field(i).Len(); j++ {
				l.checkRules(v.Field(i).Index(j), fmt.Sprintf("%s[%d]", p, j))
			}
		default:
			if msg := ruleOf(f).check(v.Field(i)); msg != "" {
				l.add(p, "%s", msg)
			}
		}
	}
}

// checkPostgresURL parses postgres.url as the store will (pgxpool.ParseConfig), so `config check` refuses what
// start-up would. The message never shows the URL: it may hold a password.
func (l *loader) checkPostgresURL(c Config) {
	const want = "want postgres://user:password@host:5432/db or key=value pairs such as \"host=db port=5432 dbname=sluice\""
	if c.Postgres.URL == "" {
		if c.Store == "postgres" {
			l.add("postgres.url", "required when store is postgres (set it, or SLUICE_POSTGRES_URL): %s", want)
		}
		return
	}
	_, err := pgxpool.ParseConfig(c.Postgres.URL)
	if err == nil {
		return
	}
	reason := "it cannot be parsed"
	var pe *pgconn.ParseConfigError
	if errors.As(err, &pe) {
		// The error text holds the connection string, redacted only on a best-effort basis: show the reason alone.
		hidden := *pe
		hidden.ConnString = ""
		reason = strings.TrimPrefix(hidden.Error(), "cannot parse ``: ")
	}
	l.add("postgres.url", "%s; %s (the value is not shown: it may hold a password)", reason, want)
}

// warnings lists advice about a valid configuration.
func (l *loader) warnings(c Config) []string {
	var w []string
	if c.Tracing.KeyHash && c.traces.exporter == "" {
		w = append(w, l.name("tracing.key_hash")+": set, but tracing is off (OTEL_TRACES_EXPORTER is not otlp): no span is exported")
	}
	for i, p := range c.Policies {
		if (p.Algorithm == "" || p.Algorithm == string(domain.SlidingLog)) && p.Limit > slidingLogWarnLimit {
			w = append(w, fmt.Sprintf("%s: policy %q is a sliding_log with limit %d: it keeps up to %d instants per key, so each key's memory and each Postgres check grow with the limit; algorithm: sliding_window enforces the same limit (it never admits more) with at most window/resolution + 1 entries per key",
				l.name(fmt.Sprintf("policies[%d].limit", i)), p.Name, p.Limit, p.Limit))
		}
	}
	return w
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// overrides returns the config policies' overrides by policy name (none: nil).
func (c Config) overrides() map[string][]domain.Override {
	var out map[string][]domain.Override
	for _, p := range c.Policies {
		for _, o := range p.Overrides {
			if out == nil {
				out = map[string][]domain.Override{}
			}
			out[p.Name] = append(out[p.Name], domain.Override{Match: o.Match, Limit: o.Limit, Window: time.Duration(o.Window)})
		}
	}
	return out
}

// domain converts a config policy (checked by the loader first: a period's zone and anchor read back).
func (pc PolicyConfig) domain() domain.Policy {
	p := domain.Policy{
		Name:        pc.Name,
		Limit:       pc.Limit,
		Window:      time.Duration(pc.Window),
		Algorithm:   domain.Algorithm(pc.Algorithm),
		Resolution:  time.Duration(pc.Resolution),
		FailureMode: domain.FailureMode(pc.FailureMode),
		Shadow:      pc.Shadow,
		Source:      domain.SourceConfig,
	}
	if pc.Period != "" {
		c := &domain.Calendar{Unit: domain.CalendarUnit(pc.Period)}
		c.Location, _ = domain.LoadTimeZone(pc.TimeZone)
		c.Anchor, _ = time.Parse(time.RFC3339, pc.Anchor)
		p.Period = c
	}
	return p
}
