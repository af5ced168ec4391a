package proxy

// Which blobs a cache repository may link: what keeps private blobs private from upstreams.

import (
	"context"
	"errors"
	"net/http"
	"strings"

	"github.com/berth/berth/internal/content"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// What a request for a blob that the cached repository does not link yet comes to (plan).
type blobAction int

const (
	serveStored  blobAction = iota // the repository links the blob (now): serve it
	linkStored                     // stored, and proven for the rule: link it, serve it
	headThenLink                   // stored, proven for the rule, asked by digest only: HEAD, link
	refuseBlob                     // stored, not proven for the rule, asked by digest only: 404
	fetchBlob                      // download it from the upstream, verify it, store or link it
)

// blobPlan is a decision about one blob request.
type blobPlan struct {
	action blobAction
	// declared: a manifest that the cache stored in the repository names the blob, with size.
	declared bool
	size     int64 // the declared size, or for linkStored and headThenLink the stored size
}

// plan decides how the cached repository local (of rule) gets blob d, which the registry found it
// does not link. Which blobs a cache repository may link is what keeps private blobs private:
//
//   - A blob that a manifest of local names (stored with the manifest, as the upstream sent it)
//     is part of the upstream's image. If a repository of the same rule links it, that upstream
//     proved it has the bytes (it sent them, and they verified): link it. Otherwise download it
//     and verify it, even when the bytes are already stored for a private repository or another
//     rule: the upstream must prove it has them. Asking it for the digest tells it nothing its
//     own manifest did not.
//   - A blob asked for by digest only, which the store holds: if a repository of the rule links
//     it, a free HEAD confirms the upstream repository has it (as before). If none does, the
//     bytes belong to private repositories or other rules: answer BLOB_UNKNOWN without asking the
//     upstream anything, so that neither a lying upstream (HEAD 200 for every digest) reads a
//     private blob through the cache, nor does any upstream learn a private digest.
//   - A blob that is not stored at all is downloaded, as ever.
//
// Every link under a rule thus goes back to bytes that rule's upstream sent and that verified.
func (c *Cache) plan(ctx context.Context, rule *Rule, local string, d oci.Digest) (blobPlan, error) {
	p := blobPlan{action: fetchBlob, size: -1}
	if n, err := c.meta.ExpectedBlob(ctx, local, d); err == nil {
		p.declared, p.size = true, n
	} else if !errors.Is(err, metadata.ErrNotFound) {
		return p, err
	}
	stored, err := c.blobs.Stat(ctx, d)
	if errors.Is(err, storage.ErrNotFound) {
		return p, nil
	} else if err != nil {
		return p, err
	}
	// Linked since the registry looked (a fill of local ended meanwhile): no upstream request.
	if _, err := c.meta.BlobSize(ctx, local, d); err == nil {
		p.action = serveStored
		return p, nil
	} else if !errors.Is(err, metadata.ErrNotFound) {
		return p, err
	}
	proven, err := c.meta.LinkedUnder(ctx, d, rule.Prefix+"/", c.nested[rule])
	if err != nil {
		return p, err
	}
	switch {
	case proven && p.declared:
		p.action, p.size = linkStored, stored
	case proven:
		p.action, p.size = headThenLink, stored
	case !p.declared:
		p.action = refuseBlob
	}
	return p, nil
}

// decide plans a blob request and carries out what needs no download: a link (after a free HEAD
// for a request by digest only) ends as serveStored, a refusal as an error. A fill of the blob
// for another repository of the rule that has stored the bytes but not linked them yet looks like
// private bytes, so a refusal plans again: after such a fill if one is in flight (it leaves
// c.fills only once it has linked), else at once (one that ended after plan read the links).
func (c *Cache) decide(ctx context.Context, rule *Rule, local, up string, d oci.Digest) (blobPlan, error) {
	p, err := c.plan(ctx, rule, local, d)
	if err == nil && p.action == refuseBlob {
		if f := c.fillOf(rule, d); f != nil {
			select {
			case <-f.ended:
			case <-ctx.Done():
				return p, ctx.Err()
			}
		}
		p, err = c.plan(ctx, rule, local, d)
	}
	if err != nil {
		return p, err
	}
	switch p.action {
	case refuseBlob:
		c.log.Info("refused a request by digest for a blob stored for other repositories only, without asking the upstream",
			"repository", local, "digest", d)
		// What an upstream's 404 gives, so that the answer does not say the bytes are here.
		return p, &Error{Kind: KindNotFound, Status: http.StatusNotFound}
	case headThenLink:
		if _, err := rule.Source.HeadBlob(ctx, up, d); err != nil {
			return p, err
		}
		fallthrough
	case linkStored:
		err := c.content.Link(ctx, local, d, p.size)
		if errors.Is(err, content.ErrNotStored) {
			// Deleted since plan looked (garbage collection, an eviction): the upstream sends
			// the bytes again, bounded as any download is.
			p.action = fetchBlob
			if !p.declared {
				p.size = -1
			}
			return p, nil
		}
		if err != nil {
			return p, err
		}
		p.action = serveStored
	}
	return p, nil
}

// fillOf returns a fill of d in flight for any repository of rule, or nil.
func (c *Cache) fillOf(rule *Rule, d oci.Digest) *fill {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, f := range c.fills {
		if f.rule == rule && strings.HasSuffix(key, "@"+d.String()) {
			return f
		}
	}
	return nil
}
