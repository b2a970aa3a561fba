package envoyrls

import (
	"crypto/sha256"
	"encoding/hex"
	"sort"
	"strconv"
	"strings"

	"github.com/sluice-dev/sluice/domain"
)

// Entry is one (key, value) of a descriptor.
type Entry struct{ Key, Value string }

// Match finds the rule for a descriptor's entries in dom, as envoyproxy/ratelimit's config_impl.go GetLimit
// walks its tree: level by level, the child "key_value" first, then the first wildcard child ("key_prefix*", in
// file order) whose prefix the "key_value" string starts with, then the bare "key" child; the walk stops at a node
// without children. A rule applies only when it sits at the node of the descriptor's last entry: a descriptor with
// more or fewer entries than the configured chain matches nothing. share, when not nil, holds for each entry
// index matched through a share_threshold wildcard the value its counter is shared under (the pattern).
func (rs *Rules) Match(dom string, entries []Entry) (rule *Rule, share map[int]string) {
	n := rs.domains[dom]
	if n == nil {
		return nil, nil
	}
	prev := n
	children := n.children
	for i, e := range entries {
		fk := e.Key + "_" + e.Value
		next := children[fk]
		wild := ""
		if next == nil {
			for _, w := range prev.wildcards {
				if strings.HasPrefix(fk, strings.TrimSuffix(w, "*")) {
					next, wild = children[w], w
					break
				}
			}
		}
		if next == nil {
			next = children[e.Key]
		}
		if next == nil {
			return nil, nil
		}
		if wild != "" && next.sharePattern != "" {
			if share == nil {
				share = map[int]string{}
			}
			share[i] = next.sharePattern
		}
		if next.rule != nil && i == len(entries)-1 {
			rule = next.rule
		}
		if len(next.children) == 0 {
			break
		}
		children = next.children
		prev = next
	}
	if rule == nil {
		return nil, nil
	}
	return rule, share
}

// HasDomain reports whether a config file defines dom.
func (rs *Rules) HasDomain(dom string) bool { return rs.domains[dom] != nil }

// hashedKeyPrefix starts a key that was too long to keep as is. Encoded keys start with a digit, so the two forms
// never collide.
const hashedKeyPrefix = "sha256:"

// Key is the sluice key of a descriptor's entries: each entry as `len(key):key=len(value):value;` (lengths in
// bytes, decimal), so that no two different entry lists give the same key whatever bytes keys and values hold
// (envoyproxy/ratelimit's `key_value_` concatenation cannot tell ("a_b","c") from ("a","b_c")). The domain is not
// in the key: it is in the policy. share replaces the value of the entries it names (share_threshold). A key
// longer than domain.MaxKeyBytes (512) is replaced by "sha256:" and the hex SHA-256 of the encoding: stable on
// every replica, collision-free in practice, and never refused (a refused key would fail the request at Envoy).
func Key(entries []Entry, share map[int]string) string {
	var b strings.Builder
	for i, e := range entries {
		v := e.Value
		if p, ok := share[i]; ok {
			v = p
		}
		b.WriteString(strconv.Itoa(len(e.Key)))
		b.WriteByte(':')
		b.WriteString(e.Key)
		b.WriteByte('=')
		b.WriteString(strconv.Itoa(len(v)))
		b.WriteByte(':')
		b.WriteString(v)
		b.WriteByte(';')
	}
	k := b.String()
	if len(k) <= domain.MaxKeyBytes {
		return k
	}
	h := sha256.Sum256([]byte(k))
	return hashedKeyPrefix + hex.EncodeToString(h[:])
}

// all returns every rule with a policy (not unlimited), domains and descriptor keys in sorted order.
func (rs *Rules) all() []*Rule {
	var out []*Rule
	var walk func(n *node)
	walk = func(n *node) {
		if n.rule != nil && !n.rule.Unlimited {
			out = append(out, n.rule)
		}
		keys := make([]string, 0, len(n.children))
		for k := range n.children {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			walk(n.children[k])
		}
	}
	doms := make([]string, 0, len(rs.domains))
	for d := range rs.domains {
		doms = append(doms, d)
	}
	sort.Strings(doms)
	for _, d := range doms {
		walk(rs.domains[d])
	}
	return out
}
