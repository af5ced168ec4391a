package auth

import (
	"fmt"
	"slices"
	"strings"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// Actions is a set of things a caller may do on a repository.
type Actions uint8

// The actions. Fetch is the pull-through cache's own: Pull on a cached repository reads what is
// cached; Fetch may also make berth ask the upstream (and spend its quota). Admin is all of them.
const (
	Pull Actions = 1 << iota
	Push
	Delete
	Fetch
	Admin

	all = Pull | Push | Delete | Fetch | Admin
)

var actionNames = []struct {
	a    Actions
	name string
}{{Pull, "pull"}, {Push, "push"}, {Delete, "delete"}, {Fetch, "fetch"}, {Admin, "admin"}}

// effective expands Admin into every action.
func (a Actions) effective() Actions {
	if a&Admin != 0 {
		return all
	}
	return a
}

// Has reports whether a includes every action of b (Admin includes all).
func (a Actions) Has(b Actions) bool { return a.effective()&b == b }

// Names lists a's actions by name, in a fixed order.
func (a Actions) Names() []string {
	var out []string
	for _, n := range actionNames {
		if a&n.a != 0 {
			out = append(out, n.name)
		}
	}
	return out
}

func (a Actions) String() string { return strings.Join(a.Names(), ",") }

// ParseActions parses action names ("pull", "push", "delete", "fetch", "admin", or "*" for all),
// given separately or comma-separated.
func ParseActions(names ...string) (Actions, error) {
	var a Actions
	for _, list := range names {
		for _, n := range strings.Split(list, ",") {
			n = strings.TrimSpace(n)
			if n == "*" {
				a |= all
				continue
			}
			i := slices.IndexFunc(actionNames, func(x struct {
				a    Actions
				name string
			}) bool {
				return x.name == n
			})
			if i < 0 {
				return 0, fmt.Errorf("unknown action %q (want pull, push, delete, fetch or admin)", n)
			}
			a |= actionNames[i].a
		}
	}
	return a, nil
}

// ValidPattern checks a repository pattern: a repository name in which '*' stands for any run of
// characters, slashes included ("team/*", "*/cache", "*"), or an exact name.
func ValidPattern(p string) error {
	if p == "" {
		return fmt.Errorf("empty repository pattern")
	}
	if p == "*" {
		return nil
	}
	// Replacing each '*' by a letter must give a valid name; that rules out everything a name
	// cannot contain.
	if !oci.ValidName(strings.ReplaceAll(p, "*", "x")) {
		return fmt.Errorf("repository pattern %q: not a repository name (lowercase letters, digits, separators . _ - /, and *)", p)
	}
	return nil
}

// Match reports whether repository name matches pattern, where '*' matches any run of
// characters, slashes included.
func Match(pattern, name string) bool {
	// The classic linear-time wildcard match: on a mismatch, back up to the last '*' and let it
	// swallow one more character.
	p, n := 0, 0
	star, mark := -1, 0
	for n < len(name) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, mark = p, n
			p++
		case p < len(pattern) && pattern[p] == name[n]:
			p++
			n++
		case star >= 0:
			p = star + 1
			mark++
			n = mark
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// ValidSubject checks a grant subject: user:NAME, robot:NAME, group:NAME or anonymous.
func ValidSubject(s string) error {
	if s == "anonymous" {
		return nil
	}
	kind, name, ok := strings.Cut(s, ":")
	if !ok || (kind != "user" && kind != "robot" && kind != "group") || ValidAccountName(name) != nil {
		return fmt.Errorf("subject %q: want user:NAME, robot:NAME, group:NAME or anonymous", s)
	}
	return nil
}

// ValidAccountName checks a user, robot or group name: 1 to 64 of lowercase letters, digits,
// '.', '_', '-', starting with a letter or digit.
func ValidAccountName(n string) error {
	if len(n) == 0 || len(n) > 64 {
		return fmt.Errorf("name %q: must be 1 to 64 characters", n)
	}
	if n == OIDCUser || n == "anonymous" {
		return fmt.Errorf("name %q is reserved", n)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		ok := c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || i > 0 && (c == '.' || c == '_' || c == '-')
		if !ok {
			return fmt.Errorf("name %q: use lowercase letters, digits, '.', '_' and '-', starting with a letter or digit", n)
		}
	}
	return nil
}

// rule is one grant, parsed.
type rule struct {
	pattern string
	actions Actions
}

// Policy is every grant, indexed by subject.
type Policy struct {
	bySubject map[string][]rule
}

// NewPolicy indexes grants. Grants with unknown actions (written by a newer berth) are skipped.
func NewPolicy(grants []metadata.Grant) *Policy {
	p := &Policy{bySubject: map[string][]rule{}}
	for _, g := range grants {
		a, err := ParseActions(g.Actions...)
		if err != nil {
			continue
		}
		p.bySubject[g.Subject] = append(p.bySubject[g.Subject], rule{g.Pattern, a})
	}
	return p
}

// Allowed returns what subjects together may do on repository name.
func (p *Policy) Allowed(subjects []string, name string) Actions {
	var a Actions
	for _, s := range subjects {
		a |= allowedBy(p.bySubject[s], name)
	}
	return a.effective()
}

func allowedBy(rules []rule, name string) Actions {
	var a Actions
	for _, r := range rules {
		if Match(r.pattern, name) {
			a |= r.actions
		}
	}
	return a
}
