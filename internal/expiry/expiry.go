// Package expiry applies lifecycle policies (internal/lifecycle: Amazon ECR's grammar and
// evaluation) to the repositories of a metadata store: each repository gets the first policy whose
// pattern matches it, its manifests are the images the policy weighs (push time, last pull, tags,
// the indexes that list them), and the manifests the policy expires are deleted, indexes before
// the manifests they list. Their blobs are then garbage collection's (internal/gc).
package expiry

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/lifecycle"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// settingPrefix keys the policies set with `berth lifecycle set` in the store's settings.
const settingPrefix = "lifecycle/"

// Store is what a Runner needs of the metadata store.
type Store interface {
	Repositories(ctx context.Context, p metadata.Page) ([]string, bool, error)
	ListManifests(ctx context.Context, repo string) ([]metadata.ManifestEntry, error)
	DeleteManifest(ctx context.Context, repo string, d oci.Digest) error
}

// Settings is where the policies set with the command line are kept (metadata.Accounts).
type Settings interface {
	Settings(ctx context.Context, prefix string) (map[string][]byte, error)
	SetSetting(ctx context.Context, key string, value []byte) error
	DeleteSetting(ctx context.Context, key string) error
}

// PullTimes says when each manifest of repo was last pulled (absent: never).
type PullTimes interface {
	LastPulled(ctx context.Context, repo string) (map[oci.Digest]time.Time, error)
}

// Assignment is a policy for the repositories Pattern matches ('*' any run of characters, as
// grants match).
type Assignment struct {
	Pattern string
	Source  string // "config" or "berth lifecycle set"
	Text    []byte
	Policy  *lifecycle.Policy
}

// Set stores a policy for pattern (replacing the one it had), after checking it.
func Set(ctx context.Context, st Settings, pattern string, text []byte) error {
	if _, err := lifecycle.Parse(text); err != nil {
		return err
	}
	if err := auth.ValidPattern(pattern); err != nil {
		return err
	}
	return st.SetSetting(ctx, settingPrefix+pattern, text)
}

// Remove removes the policy stored for pattern; metadata.ErrNotFound when there is none.
func Remove(ctx context.Context, st Settings, pattern string) error {
	return st.DeleteSetting(ctx, settingPrefix+pattern)
}

// Policies returns the assignments in the order they are tried: configured first, in their
// order, then those set with the command line, the longest (most specific) pattern first.
func Policies(ctx context.Context, st Settings, configured []Assignment) ([]Assignment, error) {
	stored, err := st.Settings(ctx, settingPrefix)
	if err != nil {
		return nil, err
	}
	out := slices.Clone(configured)
	keys := make([]string, 0, len(stored))
	for k := range stored {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int { return cmp.Or(cmp.Compare(len(b), len(a)), cmp.Compare(a, b)) })
	for _, k := range keys {
		p, err := lifecycle.Parse(stored[k])
		if err != nil {
			return nil, fmt.Errorf("the lifecycle policy stored for %s: %w", strings.TrimPrefix(k, settingPrefix), err)
		}
		out = append(out, Assignment{Pattern: strings.TrimPrefix(k, settingPrefix), Source: "berth lifecycle set", Text: stored[k], Policy: p})
	}
	return out, nil
}

// For returns the assignment that applies to repo: the first whose pattern matches; nil if none.
func For(as []Assignment, repo string) *Assignment {
	for i := range as {
		if auth.Match(as[i].Pattern, repo) {
			return &as[i]
		}
	}
	return nil
}

// Expired is a manifest a policy expires.
type Expired struct {
	Repo   string
	Digest oci.Digest
	Tags   []string
	Rule   int // the rulePriority that expires it
	Pushed time.Time
	Pulled time.Time // zero: never
}

// Runner evaluates policies over a store.
type Runner struct {
	Store Store
	Pulls PullTimes // nil: no pull times (sinceImagePulled counts from the push)
	// Skip says which repositories no policy touches (the pull-through cache's, which eviction
	// bounds).
	Skip func(repo string) bool
}

// Run evaluates the policies at now over every repository (or only repo, when not ""), and,
// unless dry, deletes what they expire. It returns what was (or would be) expired, in the order
// it goes. A manifest that cannot be deleted (pushed into an index meanwhile) is skipped with
// the error joined to the result's.
func (r Runner) Run(ctx context.Context, as []Assignment, repo string, dry bool, now time.Time) ([]Expired, error) {
	var repos []string
	if repo != "" {
		repos = []string{repo}
	} else {
		p := metadata.Page{N: 1000}
		for {
			names, more, err := r.Store.Repositories(ctx, p)
			if err != nil {
				return nil, err
			}
			repos = append(repos, names...)
			if !more || len(names) == 0 {
				break
			}
			p.Last = names[len(names)-1]
		}
	}
	var (
		out  []Expired
		errs []error
	)
	for _, name := range repos {
		a := For(as, name)
		if a == nil || r.Skip != nil && r.Skip(name) {
			continue
		}
		ex, err := r.repo(ctx, a.Policy, name, now)
		if err != nil {
			return out, fmt.Errorf("%s: %w", name, err)
		}
		for _, e := range ex {
			if !dry {
				if err := r.Store.DeleteManifest(ctx, name, e.Digest); err != nil && !errors.Is(err, metadata.ErrNotFound) {
					errs = append(errs, fmt.Errorf("expiring %s@%s: %w", name, e.Digest, err))
					continue
				}
			}
			out = append(out, e)
		}
	}
	return out, errors.Join(errs...)
}

// repo evaluates p over the manifests of repo.
func (r Runner) repo(ctx context.Context, p *lifecycle.Policy, repo string, now time.Time) ([]Expired, error) {
	entries, err := r.Store.ListManifests(ctx, repo)
	if err != nil {
		return nil, err
	}
	var pulls map[oci.Digest]time.Time
	if r.Pulls != nil {
		if pulls, err = r.Pulls.LastPulled(ctx, repo); err != nil {
			return nil, err
		}
	}
	parents := map[oci.Digest][]oci.Digest{}
	for _, e := range entries {
		children, _ := e.References()
		for _, ch := range children {
			parents[ch] = append(parents[ch], e.Digest)
		}
	}
	images := make([]lifecycle.Image, 0, len(entries))
	byDigest := map[oci.Digest]metadata.ManifestEntry{}
	for _, e := range entries {
		byDigest[e.Digest] = e
		images = append(images, lifecycle.Image{Digest: e.Digest, Tags: e.Tags, Pushed: e.Created,
			Pulled: pulls[e.Digest], Parents: parents[e.Digest]})
	}
	var out []Expired
	for _, d := range lifecycle.Evaluate(p, images, now) {
		e := byDigest[d.Digest]
		out = append(out, Expired{Repo: repo, Digest: d.Digest, Tags: e.Tags, Rule: d.RulePriority,
			Pushed: e.Created, Pulled: pulls[d.Digest]})
	}
	return out, nil
}
