package proxy

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// Warm images: per rule, references that berth keeps cached whole and current, so that a
// deployment never meets a cold miss or a stale tag. Every WarmEvery each tag is checked upstream
// with a manifest HEAD (free on Docker Hub; a GET follows only when the tag moved), and the
// manifest, the manifests an index lists and every blob they name are fetched if missing.

// DefaultWarmEvery is how often warm tags are checked when a rule does not say.
const DefaultWarmEvery = time.Hour

// Warm keeps ref (NAME:TAG below the rule's prefix, e.g. library/nginx:1.27 or nginx:1.27 on a
// Docker Hub rule) cached whole: the tag checked upstream now (a HEAD, unless the quota reserve
// holds), then whatever of the image is missing fetched.
func (c *Cache) Warm(ctx context.Context, r *Rule, ref string) error {
	name, tag, ok := strings.Cut(ref, ":")
	if !ok || name == "" || !oci.ValidName(name) || !oci.ValidTag(tag) {
		return fmt.Errorf("warm %q: want NAME:TAG", ref)
	}
	rule, local, up, ok := route(c.rules, r.Prefix+"/"+name, "")
	if !ok || rule != r {
		return fmt.Errorf("warm %q: not a repository of the rule %s", ref, r.Prefix)
	}
	start := c.now()
	cached, err := c.meta.GetManifest(ctx, local, tag)
	var m *metadata.Manifest
	switch {
	case errors.Is(err, metadata.ErrNotFound):
		m, err = c.fetchManifest(ctx, rule, local, up, tag, tag, start)
	case err == nil:
		// Checked when WarmAll last ran (or a pull checked it since) less than WarmEvery ago,
		// give or take the time the runs take: not again.
		every := rule.WarmEvery
		if every <= 0 {
			every = DefaultWarmEvery
		}
		m, err = c.revalidate(ctx, rule, local, up, tag, cached, start, every-every/10, false)
	}
	if err != nil {
		return err
	}
	return c.warmContent(ctx, rule, local, up, m)
}

// warmContent fetches what m names that the cache does not hold: an index's manifests, and their
// blobs.
func (c *Cache) warmContent(ctx context.Context, r *Rule, local, up string, m *metadata.Manifest) error {
	parsed, err := oci.ParseManifest(m.MediaType, m.Content)
	if err != nil {
		return err
	}
	for _, child := range parsed.Children {
		cm, err := c.Manifest(ctx, local, child.Digest.String())
		if err != nil {
			return fmt.Errorf("%s@%s: %w", local, child.Digest, err)
		}
		if err := c.warmContent(ctx, r, local, up, cm); err != nil {
			return err
		}
	}
	for _, b := range parsed.Blobs {
		if err := c.warmBlob(ctx, r, local, up, b.Digest); err != nil {
			return fmt.Errorf("%s@%s: %w", local, b.Digest, err)
		}
	}
	return nil
}

// warmBlob stores blob d in local if it is not there, as a client's GET would (joining a fill in
// flight), without a client.
func (c *Cache) warmBlob(ctx context.Context, r *Rule, local, up string, d oci.Digest) error {
	if _, err := c.meta.BlobSize(ctx, local, d); err == nil {
		return nil
	}
	p, err := c.decide(ctx, r, local, up, d)
	if err != nil {
		return err
	}
	if p.action == serveStored {
		return nil
	}
	f := c.join(r, local, up, d)
	defer c.leave(f)
	select {
	case <-f.ended:
	case <-ctx.Done():
		return ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.err
}

// WarmAll warms every rule's warm references once, each rule's in turn, logging what fails.
func (c *Cache) WarmAll(ctx context.Context) {
	for _, r := range c.rules {
		for _, ref := range r.Warm {
			if err := c.Warm(ctx, r, ref); err != nil && ctx.Err() == nil {
				c.log.Warn("keeping a warm image cached", "prefix", r.Prefix, "image", ref, "err", err)
			}
		}
	}
}

// WarmPeriod is how often WarmAll must run for every rule's warm references to be checked as often
// as their rule says: the shortest WarmEvery of the rules that have any; 0 when none has.
func (c *Cache) WarmPeriod() time.Duration {
	var p time.Duration
	for _, r := range c.rules {
		if len(r.Warm) > 0 {
			every := r.WarmEvery
			if every <= 0 {
				every = DefaultWarmEvery
			}
			if p == 0 || every < p {
				p = every
			}
		}
	}
	return p
}
