// Package oidc lets CI jobs exchange an OpenID Connect ID token for registry access, with no
// registry secret stored anywhere: berth trusts an issuer (GitHub Actions by default), checks
// the token's signature against the issuer's published keys, its issuer, audience and lifetime,
// then the claim conditions of a Trust, and hands back the Trust's grants.
//
// A Trust must pin who may log in with conditions on the token's claims. Trusting an issuer
// alone is never enough: anyone can run a GitHub Actions workflow in a repository of their own
// and have token.actions.githubusercontent.com sign a token with any audience they like. This
// is why Validate requires at least one condition, and for GitHub Actions one that fixes the
// repository owner.
package oidc

import (
	"fmt"
	"maps"
	"net"
	"net/url"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/berth/berth/internal/oci"
)

// DefaultIssuer is the issuer of GitHub Actions' OIDC tokens, used when a Trust names none.
const DefaultIssuer = "https://token.actions.githubusercontent.com"

// The actions a Grant may give. A CI identity never gets admin.
const (
	ActionPull   = "pull"
	ActionPush   = "push"
	ActionDelete = "delete"
)

// Bounds on the configuration, generous for real use and small enough that matching stays cheap.
const (
	maxNameLength    = 64
	maxClaimName     = 256
	maxPatternLength = 512
	maxAudience      = 1024
)

// Trust is one trusted issuer with the claim conditions a token must meet and the grants it then gets.
type Trust struct {
	Name       string            `yaml:"name"`       // identifies the trust; the caller becomes oidc:<name>:<sub>
	Issuer     string            `yaml:"issuer"`     // default DefaultIssuer ("https://token.actions.githubusercontent.com")
	Audience   string            `yaml:"audience"`   // required: the token's aud must contain it
	Conditions map[string]string `yaml:"conditions"` // claim name -> pattern; every one must match; at least one is required
	Grants     []Grant           `yaml:"grants"`
}

// Grant gives actions on the repositories a pattern matches.
type Grant struct {
	Repositories string   `yaml:"repositories"` // a repository pattern: "team/*", "app", "*"
	Actions      []string `yaml:"actions"`      // pull, push, delete (validated)
}

// issuer returns the trust's issuer, DefaultIssuer when none is set.
func (t Trust) issuer() string {
	if t.Issuer == "" {
		return DefaultIssuer
	}
	return t.Issuer
}

// Validate checks a trust: a name usable in an identity (letters, digits, '.', '_', '-'; New
// checks that names are unique), an https issuer URL (http only on a loopback address, for
// tests), an audience, at least one condition that is more than a wildcard, well-formed claim
// names and patterns, and at least one grant with a repository pattern and known actions.
// A trust on GitHub Actions must also pin the repository owner (see pinsGitHubOwner), since
// any GitHub repository can obtain a token from that issuer.
func (t Trust) Validate() error {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }

	switch {
	case t.Name == "":
		bad("name is required")
	case !validTrustName(t.Name):
		bad("name %q must be 1 to %d letters, digits, '.', '_' or '-', starting with a letter or digit", t.Name, maxNameLength)
	}

	if err := validateIssuerURL(t.issuer()); err != nil {
		bad("issuer: %v", err)
	}

	switch {
	case t.Audience == "":
		bad("audience is required (the value CI jobs request their token for)")
	case len(t.Audience) > maxAudience || !printable(t.Audience):
		bad("audience must be at most %d printable characters without spaces", maxAudience)
	}

	if len(t.Conditions) == 0 {
		bad("at least one condition is required: trusting an issuer alone would let anyone it issues tokens to in")
	}
	substantive, pinned := false, false
	for _, claim := range slices.Sorted(maps.Keys(t.Conditions)) {
		pattern := t.Conditions[claim]
		if claim == "" || len(claim) > maxClaimName || !printable(claim) {
			bad("condition claim name %q must be 1 to %d printable characters without spaces", claim, maxClaimName)
			continue
		}
		if err := validatePattern(pattern); err != nil {
			bad("condition %q: %v", claim, err)
			continue
		}
		if strings.Trim(pattern, "*") != "" {
			substantive = true
		}
		if pinsGitHubOwner(claim, pattern) {
			pinned = true
		}
	}
	if len(t.Conditions) > 0 && !substantive {
		bad("at least one condition must be more than a wildcard")
	}
	if t.issuer() == DefaultIssuer && len(t.Conditions) > 0 && !pinned {
		bad("a GitHub Actions trust needs a condition that fixes the repository owner " +
			`(repository_owner or repository_owner_id or repository_id without '*', repository "OWNER/...", or sub "repo:OWNER/..."): ` +
			"any GitHub repository can obtain a token from this issuer")
	}

	if len(t.Grants) == 0 {
		bad("at least one grant is required")
	}
	for i, g := range t.Grants {
		if err := validateRepositoryPattern(g.Repositories); err != nil {
			bad("grant %d: repositories: %v", i+1, err)
		}
		if len(g.Actions) == 0 {
			bad("grant %d: at least one action is required (pull, push, delete)", i+1)
		}
		for _, a := range g.Actions {
			if !knownAction(a) {
				bad("grant %d: unknown action %q (want pull, push or delete)", i+1, a)
			}
		}
	}

	if len(problems) > 0 {
		return fmt.Errorf("oidc: trust %q: %s", t.Name, strings.Join(problems, "; "))
	}
	return nil
}

func knownAction(a string) bool {
	return a == ActionPull || a == ActionPush || a == ActionDelete
}

func validTrustName(s string) bool {
	if s == "" || len(s) > maxNameLength {
		return false
	}
	for i, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case i > 0 && (r == '.' || r == '_' || r == '-'):
		default:
			return false
		}
	}
	return true
}

// printable reports whether s is valid UTF-8 made of printable characters other than spaces.
func printable(s string) bool {
	if !utf8.ValidString(s) {
		return false
	}
	for _, r := range s {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return false
		}
	}
	return true
}

// validatePattern checks a condition pattern: not empty, bounded, printable. Spaces are
// allowed (a workflow name may have them); control characters are not.
func validatePattern(p string) error {
	if p == "" {
		return fmt.Errorf("pattern is empty")
	}
	if len(p) > maxPatternLength {
		return fmt.Errorf("pattern longer than %d bytes", maxPatternLength)
	}
	if !utf8.ValidString(p) {
		return fmt.Errorf("pattern is not valid UTF-8")
	}
	for _, r := range p {
		if !unicode.IsPrint(r) {
			return fmt.Errorf("pattern has a control character")
		}
	}
	return nil
}

// validateRepositoryPattern accepts a repository name, in which '*' may stand for any run of
// characters: "app", "team/*", "team/*-prod", "*".
func validateRepositoryPattern(p string) error {
	if p == "" {
		return fmt.Errorf("pattern is empty")
	}
	if !oci.ValidName(strings.ReplaceAll(p, "*", "a")) {
		return fmt.Errorf("%q is not a repository name or pattern (lower-case components separated by '/', '*' as a wildcard)", p)
	}
	return nil
}

// validateIssuerURL accepts an absolute https URL without query, fragment or credentials, or
// an http URL on a loopback address (local test issuers).
func validateIssuerURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return fmt.Errorf("%q is not a URL", s)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return fmt.Errorf("%q must be an absolute URL without credentials, query or fragment", s)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !loopback(u.Hostname()) {
			return fmt.Errorf("%q must use https (http is only accepted on a loopback address)", s)
		}
	default:
		return fmt.Errorf("%q must use https", s)
	}
	return nil
}

func loopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// pinsGitHubOwner reports whether a condition restricts GitHub Actions tokens to one
// repository owner (an organisation or user), so that a repository elsewhere on GitHub
// cannot meet the trust. Owner names cannot contain '/', so "OWNER/" with no wildcard in
// OWNER pins it. job_workflow_ref does not count: it names the reusable workflow, which
// repositories of other owners may call.
func pinsGitHubOwner(claim, pattern string) bool {
	literalOwner := func(s string) bool {
		owner, _, ok := strings.Cut(s, "/")
		return ok && owner != "" && !strings.Contains(owner, "*")
	}
	switch claim {
	case "repository_owner", "repository_owner_id", "repository_id":
		return !strings.Contains(pattern, "*")
	case "repository":
		return literalOwner(pattern)
	case "sub":
		rest, ok := strings.CutPrefix(pattern, "repo:")
		return ok && literalOwner(rest)
	}
	return false
}

// match reports whether value matches a glob pattern in which '*' matches any run of
// characters, '/' included, and every other byte matches itself. It runs in O(len(pattern) *
// len(value)) at worst, without recursion.
func match(pattern, value string) bool {
	p, v := 0, 0
	star, resume := -1, 0
	for v < len(value) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			star, resume = p, v
			p++
		case p < len(pattern) && pattern[p] == value[v]:
			p++
			v++
		case star >= 0:
			// Let the last '*' swallow one more byte and try again from there.
			resume++
			p, v = star+1, resume
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}
