package config

import (
	"errors"
	"fmt"
	"strings"

	"github.com/berth/berth/internal/auth"
)

// The four tag mutability settings of Amazon ECR (imageTagMutability), with the same meaning.
const (
	Mutable                = "MUTABLE"                  // every tag may move (the default)
	Immutable              = "IMMUTABLE"                // no tag may move
	ImmutableWithExclusion = "IMMUTABLE_WITH_EXCLUSION" // no tag may move, except those the filters match
	MutableWithExclusion   = "MUTABLE_WITH_EXCLUSION"   // every tag may move, except those the filters match
)

// ECR's limits on imageTagMutabilityExclusionFilters, kept so that a rule written for one works
// on the other.
const (
	maxTagFilters      = 5
	maxTagFilterLength = 128
)

// TagRule is one rule of tag immutability: the mode of the repositories a pattern matches.
type TagRule struct {
	// Repositories is a repository pattern, as in grants: "team/*", "app", "*".
	Repositories string `yaml:"repositories"`
	// Mode is MUTABLE, IMMUTABLE, IMMUTABLE_WITH_EXCLUSION or MUTABLE_WITH_EXCLUSION.
	Mode string `yaml:"mode"`
	// Filters are 1 to 5 tag wildcard patterns ('*' any run of characters) for the two
	// _WITH_EXCLUSION modes, the tags that the mode's first word does not apply to; the other
	// modes take none.
	Filters []string `yaml:"filters"`
}

// String names the rule in messages: its pattern and mode.
func (r TagRule) String() string { return r.Repositories + " " + r.Mode }

// immutable reports whether tag may not move under r.
func (r TagRule) immutable(tag string) bool {
	filtered := false
	for _, f := range r.Filters {
		if auth.Match(f, tag) {
			filtered = true
			break
		}
	}
	switch r.Mode {
	case Immutable:
		return true
	case ImmutableWithExclusion:
		return !filtered
	case MutableWithExclusion:
		return filtered
	}
	return false
}

func (r TagRule) validate() error {
	var errs []error
	if err := auth.ValidPattern(r.Repositories); err != nil {
		errs = append(errs, fmt.Errorf("repositories: %v", err))
	}
	switch r.Mode {
	case Mutable, Immutable:
		if len(r.Filters) > 0 {
			errs = append(errs, fmt.Errorf("mode %s takes no filters (they are for %s and %s)", r.Mode, ImmutableWithExclusion, MutableWithExclusion))
		}
	case ImmutableWithExclusion, MutableWithExclusion:
		if len(r.Filters) < 1 || len(r.Filters) > maxTagFilters {
			errs = append(errs, fmt.Errorf("mode %s needs 1 to %d filters, not %d", r.Mode, maxTagFilters, len(r.Filters)))
		}
	default:
		errs = append(errs, fmt.Errorf("mode %q: want %s, %s, %s or %s", r.Mode, Mutable, Immutable, ImmutableWithExclusion, MutableWithExclusion))
	}
	for _, f := range r.Filters {
		if err := validTagFilter(f); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// validTagFilter checks a filter as ECR does (^[0-9a-zA-Z._*-]{1,128}$): the characters of a tag
// and '*'.
func validTagFilter(f string) error {
	if f == "" || len(f) > maxTagFilterLength {
		return fmt.Errorf("filter %q: want 1 to %d characters", f, maxTagFilterLength)
	}
	if i := strings.IndexFunc(f, func(c rune) bool {
		return !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || strings.ContainsRune("._*-", c))
	}); i >= 0 {
		return fmt.Errorf("filter %q: %q is not allowed (letters, digits, '.', '_', '-' and the wildcard '*')", f, f[i:i+1])
	}
	return nil
}

// TagRules are the rules of tag immutability, in order: the first whose pattern matches a
// repository decides for it, and a repository that none matches is MUTABLE.
type TagRules []TagRule

// Immutable reports whether tag of repo may not move to another manifest and, if so, the rule
// that says so (pattern and mode, for the message).
func (rs TagRules) Immutable(repo, tag string) (rule string, immutable bool) {
	for _, r := range rs {
		if auth.Match(r.Repositories, repo) {
			return r.String(), r.immutable(tag)
		}
	}
	return "", false
}

func (rs TagRules) validate() error {
	var errs []error
	for i, r := range rs {
		if err := r.validate(); err != nil {
			errs = append(errs, fmt.Errorf("immutability[%d] (%s): %w", i, r.Repositories, err))
		}
	}
	return errors.Join(errs...)
}
