package oidc

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestMatch(t *testing.T) {
	for _, c := range []struct {
		pattern, value string
		want           bool
	}{
		{"acme/app", "acme/app", true},
		{"acme/app", "acme/app2", false},
		{"acme/app", "acme/ap", false},
		{"acme/app", "Acme/app", false},
		{"", "", true},
		{"", "x", false},
		{"*", "", true},
		{"*", "anything/at/all", true},
		{"acme/*", "acme/app", true},
		{"acme/*", "acme/", true},
		{"acme/*", "acme/team/app", true}, // '*' crosses '/'
		{"acme/*", "acme", false},
		{"acme/*", "acme-evil/app", false},
		{"acme/*", "evil/acme/app", false},
		{"repo:acme/*:ref:refs/heads/main", "repo:acme/app:ref:refs/heads/main", true},
		{"repo:acme/*:ref:refs/heads/main", "repo:acme/app:ref:refs/heads/main2", false},
		{"repo:acme/*:ref:refs/heads/main", "repo:acme/app:ref:refs/heads/dev", false},
		{"repo:acme/*:ref:refs/heads/main", "repo:evil/x:ref:refs/heads/main:repo:acme/y:ref:refs/heads/main", false},
		{"repo:acme/*:ref:refs/heads/main", "repo:acme/a:ref:refs/heads/main:x:ref:refs/heads/main", true},
		{"refs/tags/v*", "refs/tags/v1.2.3", true},
		{"refs/tags/v*", "refs/heads/v1", false},
		{"*main", "refs/heads/main", true},
		{"*main", "refs/heads/main/x", false},
		{"a*b*c", "abc", true},
		{"a*b*c", "a-b-b-c", true},
		{"a*b*c", "a-b-c-d", false},
		{"**", "x", true},
		{"a**b", "ab", true},
		{"ü*ß", "üxyzß", true},
		{"?", "x", false}, // only '*' is special
		{"[a]", "a", false},
		{"a.c", "abc", false},
	} {
		if got := match(c.pattern, c.value); got != c.want {
			t.Errorf("match(%q, %q) = %v, want %v", c.pattern, c.value, got, c.want)
		}
	}
}

// globRE is the reference: '*' is (?s:.*), everything else is literal.
func globRE(pattern string) *regexp.Regexp {
	parts := strings.Split(pattern, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.MustCompile(`^` + strings.Join(parts, `(?s:.*)`) + `$`)
}

func FuzzMatch(f *testing.F) {
	for _, s := range [][2]string{
		{"acme/*", "acme/app"}, {"*a*b*", "xxaxxbxx"}, {"a*", "b"}, {"*", ""}, {"a*a*a*a*b", "aaaaaaaaaaaa"},
		{"repo:*:ref:refs/heads/main", "repo:a/b:ref:refs/heads/main"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, pattern, value string) {
		if !utf8.ValidString(pattern) || !utf8.ValidString(value) || len(pattern) > 64 || len(value) > 256 {
			t.Skip()
		}
		if got, want := match(pattern, value), globRE(pattern).MatchString(value); got != want {
			t.Fatalf("match(%q, %q) = %v, regexp says %v", pattern, value, got, want)
		}
	})
}

func TestMatchWorstCase(t *testing.T) {
	// Bounded by the pattern and token caps; this is the shape that makes naive recursive
	// matchers exponential.
	pattern := strings.Repeat("a*", maxPatternLength/2-1) + "b"
	value := strings.Repeat("a", MaxTokenSize)
	if match(pattern, value) {
		t.Fatal("matched")
	}
}

func TestPinsGitHubOwner(t *testing.T) {
	for _, c := range []struct {
		claim, pattern string
		want           bool
	}{
		{"repository_owner", "acme", true},
		{"repository_owner", "acme*", false},
		{"repository_owner", "*", false},
		{"repository_owner_id", "1000001", true},
		{"repository_id", "690000001", true},
		{"repository_id", "69*", false},
		{"repository", "acme/app", true},
		{"repository", "acme/*", true},
		{"repository", "acme*/app", false},
		{"repository", "*/app", false},
		{"repository", "acme", false}, // no "OWNER/": never a real repository, and no owner it fixes
		{"sub", "repo:acme/app:ref:refs/heads/main", true},
		{"sub", "repo:acme/*", true},
		{"sub", "repo:*/app:*", false},
		{"sub", "repo:acme*", false},
		{"sub", "*:acme/app", false},
		{"job_workflow_ref", "acme/workflows/.github/workflows/build.yml@refs/heads/main", false},
		{"ref", "refs/heads/main", false},
		{"environment", "production", false},
	} {
		if got := pinsGitHubOwner(c.claim, c.pattern); got != c.want {
			t.Errorf("pinsGitHubOwner(%q, %q) = %v, want %v", c.claim, c.pattern, got, c.want)
		}
	}
}
