package proxy

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/berth/berth/internal/events"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// Bounded caches: per rule, MaxBytes (the least recently pulled images go first, whole, until
// the rule's repositories hold no more) and UnusedFor (images not pulled for that long go). An
// image is a manifest no other manifest of its repository lists, with the manifests it lists (an
// index's platform images); evicting it deletes them and forgets the blobs they declared that no
// other cached manifest of the repository declares, which are deleted at once unless another
// repository holds them (then garbage collection decides, after its grace period). Never evicted:
// the rule's pinned and warm tags, and images pulled within evictionGuard (a pull in progress
// must not lose its blobs).

// evictionGuard is how recently pulled (or cached) an image must be to be safe from eviction.
var evictionGuard = 10 * time.Minute

// collectAfter is how long a blob an eviction released must have been untouched to be deleted
// at once: a fill that stored it again since is not undone. (No longer than evictionGuard, which
// tests shorten.)
const collectAfter = time.Minute

// PullTimes is what eviction needs of pull tracking: when each manifest of repo was last pulled
// (a manifest never pulled is absent).
type PullTimes interface {
	LastPulled(ctx context.Context, repo string) (map[oci.Digest]time.Time, error)
}

// UsePullTimes makes eviction order images by their last pull; without it, by when they were
// cached.
func (c *Cache) UsePullTimes(p PullTimes) { c.pulls = p }

// EvictStats is what an eviction pass did.
type EvictStats struct {
	Images int   // evicted
	Blobs  int   // deleted at once
	Bytes  int64 // their size
}

// cachedImage is a unit of eviction.
type cachedImage struct {
	repo      string
	root      oci.Digest
	manifests []oci.Digest // root first
	blobs     []oci.Digest // declared by its manifests
	used      time.Time    // last pulled, else cached
	pinned    bool
}

// Evict runs one eviction pass over every rule with bounds.
func (c *Cache) Evict(ctx context.Context) (EvictStats, error) {
	var total EvictStats
	for _, r := range c.rules {
		if r.MaxBytes <= 0 && r.UnusedFor <= 0 {
			continue
		}
		st, err := c.evictRule(ctx, r)
		total.Images += st.Images
		total.Blobs += st.Blobs
		total.Bytes += st.Bytes
		if err != nil {
			return total, fmt.Errorf("evicting from %s: %w", r.Prefix, err)
		}
	}
	return total, nil
}

// Bounded reports whether any rule has bounds (Evict has work).
func (c *Cache) Bounded() bool {
	return slices.ContainsFunc(c.rules, func(r *Rule) bool { return r.MaxBytes > 0 || r.UnusedFor > 0 })
}

func (c *Cache) evictRule(ctx context.Context, r *Rule) (EvictStats, error) {
	var st EvictStats
	images, err := c.cachedImages(ctx, r)
	if err != nil {
		return st, err
	}
	now := c.now()
	slices.SortFunc(images, func(a, b cachedImage) int {
		return cmp.Or(a.used.Compare(b.used), cmp.Compare(a.repo, b.repo), cmp.Compare(a.root, b.root))
	})
	pattern := r.Prefix + "/*"
	for _, img := range images {
		if img.pinned || now.Sub(img.used) < evictionGuard {
			continue
		}
		stale := r.UnusedFor > 0 && now.Sub(img.used) >= r.UnusedFor
		if !stale {
			if r.MaxBytes <= 0 {
				continue
			}
			used, _, err := c.meta.Usage(ctx, pattern, "")
			if err != nil {
				return st, err
			}
			if used <= r.MaxBytes {
				continue // only stale images go; the rest fits
			}
		}
		freed, err := c.evictImage(ctx, img)
		st.Blobs += freed.Blobs
		st.Bytes += freed.Bytes
		if err != nil {
			return st, err
		}
		st.Images++
		if c.publish != nil {
			c.publish(events.New(events.CacheEvicted, events.Data{Repository: img.repo, Digest: img.root, Size: freed.Bytes, Rule: r.Prefix}))
		}
		c.log.Info("evicted a cached image", "repository", img.repo, "digest", img.root,
			"last_used", img.used, "stale", stale, "blobs_deleted", freed.Blobs, "bytes", freed.Bytes)
	}
	return st, nil
}

// cachedImages lists the images of r's repositories.
func (c *Cache) cachedImages(ctx context.Context, r *Rule) ([]cachedImage, error) {
	pinned := map[string]bool{} // local:tag
	for _, ref := range slices.Concat(r.Pin, r.Warm) {
		name, tag, _ := strings.Cut(ref, ":")
		if _, local, _, ok := route([]*Rule{r}, r.Prefix+"/"+name, ""); ok {
			pinned[local+":"+tag] = true
		}
	}
	var out []cachedImage
	p := metadata.Page{N: 1000}
	for {
		names, more, err := c.meta.Repositories(ctx, p)
		if err != nil {
			return nil, err
		}
		for _, repo := range names {
			if rr, _, _, ok := route(c.rules, repo, ""); !ok || rr != r {
				continue
			}
			imgs, err := c.repoImages(ctx, repo, pinned)
			if err != nil {
				return nil, err
			}
			out = append(out, imgs...)
		}
		if !more || len(names) == 0 {
			return out, nil
		}
		p.Last = names[len(names)-1]
	}
}

// repoImages groups the manifests of repo into images.
func (c *Cache) repoImages(ctx context.Context, repo string, pinned map[string]bool) ([]cachedImage, error) {
	entries, err := c.meta.ListManifests(ctx, repo)
	if err != nil {
		return nil, err
	}
	var pulls map[oci.Digest]time.Time
	if c.pulls != nil {
		if pulls, err = c.pulls.LastPulled(ctx, repo); err != nil {
			return nil, err
		}
	}
	type node struct {
		e        metadata.ManifestEntry
		children []oci.Digest
		blobs    []oci.Digest
	}
	nodes := map[oci.Digest]*node{}
	listed := map[oci.Digest]bool{}
	for _, e := range entries {
		n := &node{e: e}
		n.children, n.blobs = e.References()
		for _, ch := range n.children {
			listed[ch] = true
		}
		nodes[e.Digest] = n
	}
	var out []cachedImage
	for _, e := range entries {
		if listed[e.Digest] {
			continue // part of the image of an index that lists it
		}
		img := cachedImage{repo: repo, root: e.Digest}
		var walk func(d oci.Digest)
		seen := map[oci.Digest]bool{}
		walk = func(d oci.Digest) {
			n := nodes[d]
			if n == nil || seen[d] {
				return
			}
			seen[d] = true
			img.manifests = append(img.manifests, d)
			img.blobs = append(img.blobs, n.blobs...)
			if t := maxTime(n.e.Created, pulls[d]); t.After(img.used) {
				img.used = t
			}
			for _, tag := range n.e.Tags {
				if pinned[repo+":"+tag] {
					img.pinned = true
				}
			}
			for _, ch := range n.children {
				walk(ch)
			}
		}
		walk(e.Digest)
		out = append(out, img)
	}
	return out, nil
}

// ErrPartOfImage refuses to evict a manifest that an index of the repository lists: the index's
// image is the unit of eviction.
var ErrPartOfImage = errors.New("the manifest is part of an index's image")

// Evicted is what evicting one image did.
type Evicted struct {
	Root      oci.Digest   // the image's manifest (an index, or a single-platform manifest)
	Manifests []oci.Digest // every manifest deleted, Root first
	EvictStats
}

// EvictImage evicts, now, the image that ref (a tag or digest) names in the cached repository
// local, as an operator asks: whatever the rule's bounds, pins and warm list, and whatever its
// last pull (a pull of it in progress may fail; the next pull fetches it again). Its blobs go as
// Evict's do: forgotten by the repository, deleted at once when nothing else holds them and they
// were not stored within the last minute, else left to garbage collection. ErrNotCached when local
// is under no rule; metadata.ErrNotFound when ref is not cached; ErrPartOfImage when ref is a
// platform manifest that an index lists (evict the index).
func (c *Cache) EvictImage(ctx context.Context, local, ref string) (Evicted, error) {
	r, _, err := c.rule(local)
	if err != nil {
		return Evicted{}, err
	}
	m, err := c.meta.GetManifest(ctx, local, ref)
	if err != nil {
		return Evicted{}, err
	}
	images, err := c.repoImages(ctx, local, nil)
	if err != nil {
		return Evicted{}, err
	}
	for _, img := range images {
		if img.root == m.Digest {
			st, err := c.evictImage(ctx, img)
			if err == nil {
				if c.publish != nil { // the same event as the bounds' evictions: webhooks see every one
					c.publish(events.New(events.CacheEvicted, events.Data{Repository: local, Digest: img.root, Size: st.Bytes, Rule: r.Prefix}))
				}
				c.log.Info("evicted a cached image on request", "repository", local, "digest", img.root,
					"blobs_deleted", st.Blobs, "bytes", st.Bytes)
			}
			return Evicted{Root: img.root, Manifests: img.manifests, EvictStats: st}, err
		}
	}
	for _, img := range images {
		if slices.Contains(img.manifests, m.Digest) {
			return Evicted{}, fmt.Errorf("%s@%s: %w %s", local, m.Digest, ErrPartOfImage, img.root)
		}
	}
	return Evicted{}, fmt.Errorf("%s@%s: %w", local, m.Digest, metadata.ErrNotFound)
}

// evictImage deletes img's manifests, forgets the blobs they alone declared in the repository,
// and deletes those blobs now unless another repository holds them.
func (c *Cache) evictImage(ctx context.Context, img cachedImage) (EvictStats, error) {
	var st EvictStats
	for _, d := range img.manifests {
		if err := c.meta.DeleteManifest(ctx, img.repo, d); err != nil && !errors.Is(err, metadata.ErrNotFound) {
			return st, err
		}
	}
	// What the manifests that stay still declare stays expected.
	rest, err := c.repoImages(ctx, img.repo, nil)
	if err != nil {
		return st, err
	}
	kept := map[oci.Digest]bool{}
	for _, other := range rest {
		for _, b := range other.blobs {
			kept[b] = true
		}
	}
	var released []oci.Digest
	for _, b := range img.blobs {
		if !kept[b] && !slices.Contains(released, b) {
			released = append(released, b)
		}
	}
	if err := c.meta.ForgetExpected(ctx, img.repo, released); err != nil {
		return st, err
	}
	before := time.Now().Add(-min(collectAfter, evictionGuard))
	for _, d := range released {
		rec, err := c.meta.Blob(ctx, d)
		if errors.Is(err, metadata.ErrNotFound) {
			continue // never fetched
		}
		if err != nil {
			return st, err
		}
		if rec.Links > 0 {
			continue // another repository holds it: garbage collection decides, after its grace
		}
		garbage, size, err := c.meta.CollectBlob(ctx, d, before, func(ctx context.Context) error {
			if err := c.blobs.Delete(ctx, d); err != nil && !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			return nil
		})
		if err != nil {
			return st, err
		}
		if garbage {
			st.Blobs++
			st.Bytes += max(size, 0)
		}
	}
	return st, nil
}

// maxTime is the later of a and b.
func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}
