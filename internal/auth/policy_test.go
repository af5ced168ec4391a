package auth

import (
	"strings"
	"testing"

	"github.com/berth/berth/internal/metadata"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, name string
		want          bool
	}{
		// Exact names.
		{"team/app", "team/app", true},
		{"team/app", "team/ap", false},
		{"team/app", "team/app2", false},
		{"team/app", "team/app/sub", false},
		{"team/app", "xteam/app", false},
		{"team", "team", true},
		{"team", "team/app", false},
		// A prefix: '*' spans slashes, but "team/*" needs the slash.
		{"team/*", "team/app", true},
		{"team/*", "team/a/b", true},
		{"team/*", "team/a/b/c/d", true},
		{"team/*", "team/", true},
		{"team/*", "team", false},
		{"team/*", "teams/app", false},
		{"team/*", "other/team/app", false},
		{"team*", "team", true},
		{"team*", "teams/app", true},
		// Everything.
		{"*", "a", true},
		{"*", "team/a/b", true},
		{"*", "", true},
		{"**", "team/a", true},
		// A suffix.
		{"*/cache", "team/cache", true},
		{"*/cache", "a/b/cache", true},
		{"*/cache", "cache", false},
		{"*/cache", "team/cache/x", false},
		{"*/cache", "team/cachex", false},
		// In the middle.
		{"team/*/prod", "team/app/prod", true},
		{"team/*/prod", "team/a/b/prod", true},
		{"team/*/prod", "team/prod", false},
		{"team/*/prod", "team/app/prod2", false},
		// Backtracking: the first candidate for a star is not the right one.
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "abbbc", true},
		{"a*b*c", "acbc", true},
		{"a*b*c", "abcbc", true},
		{"a*b*c", "abcb", false},
		{"a*b*c", "ab", false},
		{"a*b*c", "ac", false},
		{"a*b*c", "xabc", false},
		{"a*b*c", "abcx", false},
		{"*a*a*a*b", strings.Repeat("a", 40), false}, // would be exponential with naive recursion
		{"*a*a*a*b", strings.Repeat("a", 40) + "b", true},
		{"a*aab", "aaaaab", true},
		{"a*aab", "aaaab", true},
		{"a*aab", "aab", false},
		{"*ab", "aab", true},
		{"*ab", "aba", false},
		// No other wildcards: '?', '.' and '[' are themselves.
		{"team/a?p", "team/app", false},
		{"team/a.p", "team/app", false},
		{"team/a.p", "team/a.p", true},
		// Empty.
		{"", "", true},
		{"", "a", false},
		{"a", "", false},
	} {
		if got := Match(c.pattern, c.name); got != c.want {
			t.Errorf("Match(%q, %q) = %v, want %v", c.pattern, c.name, got, c.want)
		}
	}
}

func TestValidPattern(t *testing.T) {
	for _, p := range []string{"*", "team/*", "*/cache", "team/app", "a", "team/*/prod", "docker-hub/*", "a*b*c", "**", "team-*", "team.*", "a/b/c/d"} {
		if err := ValidPattern(p); err != nil {
			t.Errorf("ValidPattern(%q): %v", p, err)
		}
	}
	for _, p := range []string{"", "Team/*", "team/", "/team", "team//app", "team/*/", "*/", "/*", "team app", "team:tag", "team@sha256", "a?b", "*.", "-team", "team/.app", strings.Repeat("a", 256)} {
		if err := ValidPattern(p); err == nil {
			t.Errorf("ValidPattern(%q) = nil, want an error", p)
		}
	}
}

func TestValidAccountName(t *testing.T) {
	for _, n := range []string{"a", "alice", "ci-bot", "ci_bot", "ci.bot", "0day", "a-", strings.Repeat("a", 64)} {
		if err := ValidAccountName(n); err != nil {
			t.Errorf("ValidAccountName(%q): %v", n, err)
		}
	}
	for _, n := range []string{"", "Alice", "-a", ".a", "_a", "a b", "a:b", "a/b", "a@b", "ä", strings.Repeat("a", 65), "a\x00"} {
		if err := ValidAccountName(n); err == nil {
			t.Errorf("ValidAccountName(%q) = nil, want an error", n)
		}
	}
}

func TestValidSubject(t *testing.T) {
	for _, s := range []string{"anonymous", "user:alice", "robot:ci", "group:devs", "user:a.b-c_d"} {
		if err := ValidSubject(s); err != nil {
			t.Errorf("ValidSubject(%q): %v", s, err)
		}
	}
	for _, s := range []string{"", "alice", "user:", "user:Alice", "admin:alice", "oidc:gh:repo", "User:alice", "anonymous:x",
		"user:alice:x", "group:*", "user:*", "*", "everyone", " user:alice"} {
		if err := ValidSubject(s); err == nil {
			t.Errorf("ValidSubject(%q) = nil, want an error", s)
		}
	}
}

func TestParseActions(t *testing.T) {
	for _, c := range []struct {
		in   []string
		want Actions
	}{
		{nil, 0},
		{[]string{"pull"}, Pull},
		{[]string{"push"}, Push},
		{[]string{"delete"}, Delete},
		{[]string{"fetch"}, Fetch},
		{[]string{"admin"}, Admin},
		{[]string{"pull,push"}, Pull | Push},
		{[]string{"pull", "push"}, Pull | Push},
		{[]string{" pull , push "}, Pull | Push},
		{[]string{"pull,pull"}, Pull},
		{[]string{"*"}, Pull | Push | Delete | Fetch | Admin},
		{[]string{"pull", "*"}, all},
	} {
		got, err := ParseActions(c.in...)
		if err != nil || got != c.want {
			t.Errorf("ParseActions(%q) = %v, %v; want %v", c.in, got, err, c.want)
		}
	}
	for _, in := range [][]string{{""}, {"frob"}, {"pull,frob"}, {"pull", "frob"}, {"PULL"}, {"pull,,push"}, {"pull push"}, {"**"}} {
		if got, err := ParseActions(in...); err == nil {
			t.Errorf("ParseActions(%q) = %v, want an error", in, got)
		}
	}
}

func TestActions(t *testing.T) {
	if !Admin.Has(Pull | Push | Delete | Fetch) {
		t.Error("admin does not imply every action")
	}
	if !Admin.Has(Admin) || !(Pull | Push).Has(Pull) || !(Pull | Push).Has(0) {
		t.Error("Has misses what is there")
	}
	if Pull.Has(Push) || (Pull | Push).Has(Pull|Delete) || Pull.Has(Fetch) || (Pull | Push | Delete | Fetch).Has(Admin) {
		t.Error("Has finds what is not there")
	}
	if got := (Fetch | Pull | Admin | Delete | Push).String(); got != "pull,push,delete,fetch,admin" {
		t.Errorf("String = %q", got)
	}
	if got := Actions(0).Names(); got != nil {
		t.Errorf("Names of none = %q", got)
	}
	// Names round-trip through ParseActions.
	for a := range Actions(all + 1) {
		got, err := ParseActions(a.Names()...)
		if err != nil || got != a {
			t.Errorf("ParseActions(%q) = %v, %v; want %v", a.Names(), got, err, a)
		}
	}
}

func TestPolicy(t *testing.T) {
	p := NewPolicy([]metadata.Grant{
		{Subject: "user:alice", Pattern: "team/*", Actions: []string{"pull", "push"}},
		{Subject: "user:alice", Pattern: "team/secret", Actions: []string{"delete"}},
		{Subject: "group:devs", Pattern: "team/*", Actions: []string{"delete"}},
		{Subject: "group:ops", Pattern: "*", Actions: []string{"admin"}},
		{Subject: "anonymous", Pattern: "public/*", Actions: []string{"pull"}},
		{Subject: "robot:ci", Pattern: "docker-hub/*", Actions: []string{"fetch", "pull"}},
		{Subject: "robot:ci", Pattern: "team/app", Actions: []string{"teleport", "pull"}}, // from a newer berth: skipped
		{Subject: "user:bob", Pattern: "team/*", Actions: []string{"*"}},
	})
	for _, c := range []struct {
		subjects []string
		name     string
		want     Actions
	}{
		{[]string{"user:alice"}, "team/app", Pull | Push},
		{[]string{"user:alice"}, "team/secret", Pull | Push | Delete},
		{[]string{"user:alice"}, "team", 0},
		{[]string{"user:alice"}, "other/app", 0},
		{[]string{"user:alice"}, "public/x", 0},
		{[]string{"user:alice", "anonymous"}, "public/x", Pull},
		{[]string{"user:alice", "anonymous", "group:devs"}, "team/app", Pull | Push | Delete},
		{[]string{"group:devs"}, "team/app", Delete},
		{[]string{"group:ops"}, "anything/at/all", all},
		{[]string{"anonymous"}, "public/a/b", Pull},
		{[]string{"anonymous"}, "team/app", 0},
		{[]string{"robot:ci"}, "docker-hub/library/nginx", Pull | Fetch},
		{[]string{"robot:ci"}, "team/app", 0},
		{[]string{"user:bob"}, "team/app", all},
		{[]string{"user:carol"}, "team/app", 0},
		// Subjects are names, not patterns: a user named like a group gets nothing of it.
		{[]string{"user:devs"}, "team/app", 0},
		{nil, "public/x", 0},
	} {
		if got := p.Allowed(c.subjects, c.name); got != c.want {
			t.Errorf("Allowed(%q, %s) = %v, want %v", c.subjects, c.name, got, c.want)
		}
	}
}
