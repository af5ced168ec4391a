package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/content"
	"github.com/berth/berth/internal/events"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// manifestTimeout bounds one upstream manifest exchange; blobTimeout one blob fill.
const (
	manifestTimeout = 2 * time.Minute
	blobTimeout     = 2 * time.Hour
)

// catalog is the metadata store as the cache uses it: blobs are linked by content only.
type catalog interface {
	BlobSize(ctx context.Context, repo string, d oci.Digest) (int64, error)
	ExpectedBlob(ctx context.Context, repo string, d oci.Digest) (int64, error)
	LinkedUnder(ctx context.Context, d oci.Digest, prefix string, except []string) (bool, error)
	PutManifest(ctx context.Context, repo string, m *metadata.NewManifest, tags ...string) error
	GetManifest(ctx context.Context, repo, reference string) (*metadata.Manifest, error)
	DeleteTag(ctx context.Context, repo, tag string) error
	Tags(ctx context.Context, repo string, p metadata.Page) ([]string, bool, error)
	TagChecked(ctx context.Context, repo, tag string) (time.Time, error)
	SetTagChecked(ctx context.Context, repo, tag string, t time.Time) error
	// what eviction needs (evict.go)
	Repositories(ctx context.Context, p metadata.Page) ([]string, bool, error)
	ListManifests(ctx context.Context, repo string) ([]metadata.ManifestEntry, error)
	DeleteManifest(ctx context.Context, repo string, d oci.Digest) error
	ForgetExpected(ctx context.Context, repo string, ds []oci.Digest) error
	Usage(ctx context.Context, pattern string, d oci.Digest) (int64, bool, error)
	Blob(ctx context.Context, d oci.Digest) (metadata.BlobRecord, error)
	CollectBlob(ctx context.Context, d oci.Digest, before time.Time, remove func(context.Context) error) (bool, int64, error)
}

// Cache serves the repositories under its rules' prefixes from local storage and fills that storage
// from the upstreams, as DESIGN.md §4 says: digests are immutable, tags are revalidated by HEAD
// under the rule's policy, failures serve stale copies, concurrent misses share one upstream fetch.
type Cache struct {
	rules   []*Rule // longest prefix first
	mirror  *Rule   // serves root pulls of repositories berth does not have (registry-mirrors)
	blobs   storage.BlobStore
	meta    catalog
	content *content.Store // every write that makes a blob visible
	log     *slog.Logger
	now     func() time.Time

	// nested lists, per rule, the prefixes (with "/") of the rules inside its own, whose
	// repositories are not its own.
	nested map[*Rule][]string
	limits Limits

	flight singleflight.Group // manifest GETs and HEADs in flight, by key
	mu     sync.Mutex
	fills  map[string]*fill // blob fills in flight, by repository@digest
	hist   history          // history.go: samples of Status for the console
	wg     sync.WaitGroup

	// replicas, when set (ShareWith), coordinate upstream requests with other replicas.
	pulls    PullTimes // when manifests were last pulled, if tracked (UsePullTimes)
	replicas Shared
	holder   string
	notifier metadata.Notifier // replicas' messages, when the shared store has them

	wakeMu sync.Mutex
	wake   map[string]chan struct{} // lease key -> closed when another replica let go of it

	// publish tells webhooks of fills, evictions and quota crossings (UseEvents); nil: nobody.
	publish func(events.Event)

	// base is the context of fills: no client's, ended only by Close.
	base   context.Context
	cancel context.CancelFunc
}

// Limits bound what the cache's blob fills write.
type Limits struct {
	// MaxFillSize bounds a fill that neither a manifest's descriptor nor the upstream's
	// Content-Length sizes (a request by digest only, answered with a chunked body).
	MaxFillSize int64
	// MinFreeSpace is how many bytes fills leave free on the blob store's filesystem; 0: no floor.
	MinFreeSpace int64
}

// DefaultMaxFillSize is Limits.MaxFillSize unless set: 16 GiB.
const DefaultMaxFillSize = 16 << 30

// New returns a cache over rules, storing what it fetches in blobs and meta, with
// DefaultMaxFillSize and no free-space floor (SetLimits).
func New(rules []*Rule, blobs storage.BlobStore, meta metadata.Store, log *slog.Logger) *Cache {
	rs := slices.Clone(rules)
	sort.SliceStable(rs, func(i, j int) bool { return len(rs[i].Prefix) > len(rs[j].Prefix) })
	nested := map[*Rule][]string{}
	for _, r := range rs {
		for _, o := range rs {
			if o != r && strings.HasPrefix(o.Prefix+"/", r.Prefix+"/") {
				nested[r] = append(nested[r], o.Prefix+"/")
			}
		}
	}
	base, cancel := context.WithCancel(context.Background())
	return &Cache{rules: rs, blobs: blobs, meta: meta, content: content.New(blobs, meta), log: log, now: time.Now, nested: nested,
		limits: Limits{MaxFillSize: DefaultMaxFillSize}, fills: map[string]*fill{}, base: base, cancel: cancel}
}

// SetLimits sets the bounds of fills (before the cache serves); a zero MaxFillSize keeps the
// default.
func (c *Cache) SetLimits(l Limits) {
	if l.MaxFillSize <= 0 {
		l.MaxFillSize = DefaultMaxFillSize
	}
	c.limits = l
}

// UseEvents makes the cache publish an event for every manifest it fetches from an upstream
// and stores, every image it evicts, and every time an upstream's remaining quota falls to its
// rule's reserve (nil: none). publish must not block.
func (c *Cache) UseEvents(publish func(events.Event)) { c.publish = publish }

// watchQuota publishes QuotaLow when the quota r's upstream last reported has fallen to or
// below the reserve, once per crossing: the quota must be seen above the reserve again before
// the next. It is this replica's view: each replica tells of the crossings it sees.
func (c *Cache) watchQuota(r *Rule, local string) {
	if c.publish == nil {
		return
	}
	q := r.Source.Quota()
	if !q.Known {
		return
	}
	low := q.Remaining <= r.QuotaReserve
	if r.quotaLow.Swap(low) == low || !low {
		return
	}
	remaining, limit, reserve := q.Remaining, q.Limit, r.QuotaReserve
	c.publish(events.New(events.QuotaLow, events.Data{Repository: local, Rule: r.Prefix,
		Remaining: &remaining, Limit: &limit, Reserve: &reserve}))
}

// Close stops the blob fills in flight and waits for them.
func (c *Cache) Close() {
	c.cancel()
	c.wg.Wait()
}

// SetMirror makes the rule with prefix serve Docker Engine "registry-mirrors" requests: reads at
// the root (/v2/library/nginx/...) of repositories that do not exist locally.
func (c *Cache) SetMirror(prefix string) error {
	for _, r := range c.rules {
		if r.Prefix == prefix {
			c.mirror = r
			return nil
		}
	}
	return fmt.Errorf("no proxy rule has prefix %q", prefix)
}

// Route implements registry.Cache: it reports whether name (with the ns query parameter of
// containerd mirrors) is a cached repository, and the local repository that holds it. Only reads
// (read) may reach the root mirror; mirror marks that route, which the registry takes only for
// names that are not its own repositories, so that pushes and berth's own repositories stay local.
func (c *Cache) Route(name, ns string, read bool) (local string, mirror, ok bool) {
	if _, local, _, ok := route(c.rules, name, ns); ok {
		return local, false, true
	}
	if c.mirror == nil || !read {
		return "", false, false
	}
	return c.mirror.Prefix + "/" + c.mirror.upstreamName(name), true, true
}

// Candidates lists the cached repositories that requests for name may be served from: its own
// route, the rules it may reach as a containerd mirror (?ns=), and the root mirror. The token
// service grants on a name what the caller may do on any of them.
func (c *Cache) Candidates(name string) []string {
	var out []string
	if _, local, _, ok := route(c.rules, name, ""); ok {
		out = append(out, local)
	}
	for _, r := range c.rules {
		if len(r.Hosts) > 0 {
			out = append(out, r.Prefix+"/"+r.upstreamName(name))
		}
	}
	if c.mirror != nil {
		out = append(out, c.mirror.Prefix+"/"+c.mirror.upstreamName(name))
	}
	return out
}

// Status reports every rule's upstream quota, requests and cache counters.
func (c *Cache) Status() []Status {
	out := make([]Status, 0, len(c.rules))
	fills := c.fillsByRule()
	for _, r := range c.rules {
		st := Status{Prefix: r.Prefix, Upstream: r.Source.Name(), Quota: r.Source.Quota(),
			Requests: r.Source.Stats(), Cache: r.stats.snapshot(), Reserve: r.QuotaReserve, FillsInFlight: fills[r]}
		st.Cache.saved(st.Requests)
		out = append(out, st)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Prefix < out[j].Prefix })
	return out
}

// Served implements registry.Cache: berth answered a client's manifest GET (manifest) or sent
// it n bytes of a blob, in the cached repository local; what the cache saved is counted from it.
func (c *Cache) Served(local string, manifest bool, n int64) {
	r, _, _, ok := route(c.rules, local, "")
	if !ok {
		return
	}
	if manifest {
		r.stats.clientGets.Add(1)
	} else if n > 0 {
		r.stats.clientBytes.Add(n)
	}
}

// ErrNotCached reports that a repository is not under any pull-through rule.
var ErrNotCached = errors.New("not a cached repository (no pull-through rule's prefix)")

func (c *Cache) rule(local string) (*Rule, string, error) {
	r, _, up, ok := route(c.rules, local, "")
	if !ok {
		return nil, "", fmt.Errorf("%s: %w", local, ErrNotCached)
	}
	return r, up, nil
}

// Manifest implements registry.Cache: the manifest a tag or digest names in the cached repository
// local, from the cache when the rule's policy allows, else from the upstream.
func (c *Cache) Manifest(ctx context.Context, local, ref string) (*metadata.Manifest, error) {
	r, up, err := c.rule(local)
	if err != nil {
		return nil, err
	}
	// Taken before the store is read: an upstream answer stored after this moment is one this
	// request could have shared (see fetchManifest and revalidate).
	start := c.now()
	cached, err := c.meta.GetManifest(ctx, local, ref)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return nil, err
	}
	if auth.IsCacheOnly(ctx) {
		// The caller may read what is cached but not make berth ask the upstream.
		if cached == nil {
			return nil, errNotCached(oci.ErrManifestUnknown)
		}
		r.stats.hits.Add(1)
		return cached, nil
	}
	if oci.IsDigest(ref) {
		if cached != nil { // digests are immutable: never asked upstream again
			r.stats.hits.Add(1)
			return cached, nil
		}
		return c.fetchManifest(ctx, r, local, up, ref, "", start)
	}
	if cached == nil {
		return c.fetchManifest(ctx, r, local, up, ref, ref, start)
	}
	return c.revalidate(ctx, r, local, up, ref, cached, start, r.Every, false)
}

// Revalidation is what a forced check of a cached tag found.
type Revalidation struct {
	Previous oci.Digest // what the tag named in the cache before
	Digest   oci.Digest // what it names now, as the upstream said
}

// ErrQuotaReserve refuses a forced revalidation while the upstream's quota is at the rule's
// reserve: the reserve is kept for pulls of what is not cached.
var ErrQuotaReserve = errors.New("the upstream's quota is at the rule's reserve")

// Revalidate checks the cached tag of the cached repository local with the upstream now,
// whatever the rule's revalidation interval, as an operator asks when they know the tag moved: a
// HEAD, and a GET of the new manifest when the digest changed, so that the next pull serves it.
// It never serves stale: an upstream failure is the error (an *Error). ErrNotCached when local
// is under no rule; metadata.ErrNotFound when the tag is not cached; ErrQuotaReserve.
func (c *Cache) Revalidate(ctx context.Context, local, tag string) (Revalidation, error) {
	r, up, err := c.rule(local)
	if err != nil {
		return Revalidation{}, err
	}
	start := c.now()
	cached, err := c.meta.GetManifest(ctx, local, tag)
	if err != nil {
		return Revalidation{}, err
	}
	if q := c.quota(ctx, r); q.Known && q.Remaining <= r.QuotaReserve && (q.Window == 0 || start.Sub(q.Seen) < q.Window) {
		return Revalidation{}, fmt.Errorf("%w (%d of %d remaining)", ErrQuotaReserve, q.Remaining, q.Limit)
	}
	m, err := c.revalidate(ctx, r, local, up, tag, cached, start, 0, true)
	if err != nil {
		return Revalidation{}, err
	}
	return Revalidation{Previous: cached.Digest, Digest: m.Digest}, nil
}

// revalidate decides whether the cached manifest of tag may be served, checking the upstream with
// a manifest HEAD when the tag was last checked every or longer ago (0: always); a GET follows
// only when the digest changed. now is when the request started, before it read the store.
// forced (an operator's Revalidate, which weighed the quota reserve itself) checks whatever the
// reserve and never serves stale: the operator is told that the upstream failed.
func (c *Cache) revalidate(ctx context.Context, r *Rule, local, up, tag string, cached *metadata.Manifest, now time.Time, every time.Duration, forced bool) (*metadata.Manifest, error) {
	checked, err := c.meta.TagChecked(ctx, local, tag)
	if err != nil && !errors.Is(err, metadata.ErrNotFound) {
		return nil, err
	}
	age := now.Sub(checked)
	if every > 0 && age < every {
		r.stats.hits.Add(1)
		return cached, nil
	}
	if q := c.quota(ctx, r); !forced && q.Known && q.Remaining <= r.QuotaReserve && (q.Window == 0 || now.Sub(q.Seen) < q.Window) {
		r.stats.quotaSaves.Add(1)
		r.stats.hits.Add(1)
		return cached, nil
	}
	v, err := c.shared(ctx, r, "HEAD "+local+":"+tag, func(ctx context.Context) (any, error) {
		var d oci.Digest
		// A check of the tag that another request's HEAD or GET completed after this request
		// started (here or on another replica), its flight already over, answers for this one
		// as joining it would have.
		_, err := c.leased(ctx, "HEAD "+local+":"+tag, func(ctx context.Context) (bool, error) {
			m, err := c.checkedSince(ctx, local, tag, now)
			if m != nil {
				d = m.Digest
			}
			return m != nil, err
		}, func(ctx context.Context) error {
			r.stats.revalidations.Add(1)
			desc, err := r.Source.HeadManifest(ctx, up, tag)
			c.publishQuota(ctx, r)
			c.watchQuota(r, local)
			if KindOf(err) == KindNotFound {
				// The upstream deleted the tag: an answer, not a failure. The cached tag goes
				// too, so that it is not served on as if current (to callers without fetch, in
				// tag lists); the manifest stays, by digest.
				if derr := c.meta.DeleteTag(ctx, local, tag); derr != nil && !errors.Is(derr, metadata.ErrNotFound) {
					return derr
				}
				c.log.Info("tag deleted upstream: removed from the cache", "repository", local, "tag", tag, "digest", cached.Digest)
			}
			if err != nil {
				return err
			}
			d = desc.Digest
			if desc.Digest == cached.Digest {
				// Stamped with when the answer came, for every request that started before it.
				return c.meta.SetTagChecked(ctx, local, tag, c.now())
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		return d, nil
	})
	if err == nil {
		d := v.(oci.Digest)
		if d == cached.Digest {
			r.stats.hits.Add(1)
			return cached, nil
		}
		// The tag moved upstream: fetch the new manifest by digest (or reuse it if already here).
		m, ferr := c.fetchManifest(ctx, r, local, up, d.String(), tag, now)
		if ferr == nil {
			return m, nil
		}
		err = ferr
	}
	if !forced && KindOf(err) != "" && KindOf(err) != KindNotFound && age <= r.MaxStaleness {
		r.stats.staleServes.Add(1)
		c.log.Warn("upstream failed: serving the cached manifest", "repository", local, "tag", tag,
			"digest", cached.Digest, "last_checked", checked, "err", err)
		return cached, nil
	}
	return nil, clientError(err, oci.ErrManifestUnknown)
}

// fetched is what a manifest fetch's flight returns; stored says it needed no upstream GET.
type fetched struct {
	m      *metadata.Manifest
	stored bool
}

// fetchManifest gets ref from the upstream (one request however many callers ask at once), stores
// it, and points tag (if any) at it. since is when the caller started, before it read the store:
// the flight reads the store again, so that a caller that found nothing there but reaches the
// flight only after the one that fetched ref has ended is answered by that fetch, as it would have
// been had it joined it.
func (c *Cache) fetchManifest(ctx context.Context, r *Rule, local, up, ref, tag string, since time.Time) (*metadata.Manifest, error) {
	v, err := c.shared(ctx, r, "GET "+local+":"+ref+":"+tag, func(ctx context.Context) (any, error) {
		var m *metadata.Manifest
		// What is stored answers without the upstream: a manifest by digest, or the tag as a
		// fetch or HEAD that completed since this caller started left it (checkedSince).
		answered := func(ctx context.Context) (bool, error) {
			var err error
			switch {
			case oci.IsDigest(ref):
				if m, err = c.meta.GetManifest(ctx, local, ref); errors.Is(err, metadata.ErrNotFound) {
					m, err = nil, nil
				}
			case ref == tag:
				m, err = c.checkedSince(ctx, local, tag, since)
			}
			return m != nil, err
		}
		stored, err := c.leased(ctx, "GET "+local+":"+ref+":"+tag, answered, func(ctx context.Context) error {
			body, mediaType, err := r.Source.GetManifest(ctx, up, ref)
			c.publishQuota(ctx, r)
			c.watchQuota(r, local)
			if err != nil {
				return err
			}
			if m, err = newManifest(ref, mediaType, body); err != nil {
				return err
			}
			if err := c.storeManifest(ctx, local, tag, m); err != nil {
				return err
			}
			if c.publish != nil {
				c.publish(events.New(events.CacheFilled, events.Data{Repository: local, Digest: m.Digest, Tag: tag,
					MediaType: m.MediaType, Size: int64(len(m.Content)), Rule: r.Prefix}))
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if stored && oci.IsDigest(ref) && tag != "" {
			// Here by digest already: the tag (which moved upstream) is to point at it.
			if err := c.storeManifest(ctx, local, tag, m); err != nil {
				return nil, err
			}
		}
		return fetched{m, stored}, nil
	})
	if err != nil {
		r.stats.misses.Add(1)
		if KindOf(err) != "" && KindOf(err) != KindNotFound {
			c.log.Warn("upstream manifest fetch failed", "repository", local, "reference", ref, "err", err)
		}
		return nil, clientError(err, oci.ErrManifestUnknown)
	}
	f := v.(fetched)
	if f.stored {
		r.stats.hits.Add(1)
	} else {
		r.stats.misses.Add(1)
	}
	return f.m, nil
}

// storeManifest stores m, an upstream manifest, in the cached repository local, and points tag (if
// any) at it, stamped as checked with the upstream now.
func (c *Cache) storeManifest(ctx context.Context, local, tag string, m *metadata.Manifest) error {
	// No reference checks: a cache holds manifests before the blobs clients will ask for. What
	// it names is recorded, with the sizes it declares (see plan).
	nm, err := expecting(m)
	if err != nil {
		return err
	}
	var tags []string
	if tag != "" {
		tags = []string{tag}
	}
	if err := c.meta.PutManifest(ctx, local, nm, tags...); err != nil {
		return err
	}
	if tag == "" {
		return nil
	}
	// Stamped after the store, so that a request that read the store before sees a time after
	// its own start (checkedSince).
	return c.meta.SetTagChecked(ctx, local, tag, c.now())
}

// checkedSince returns the manifest tag points at if the tag was checked with the upstream (by a
// GET or a HEAD that completed) at or after since; nil if not. Two indexed reads, on the paths
// that would otherwise ask the upstream.
func (c *Cache) checkedSince(ctx context.Context, local, tag string, since time.Time) (*metadata.Manifest, error) {
	checked, err := c.meta.TagChecked(ctx, local, tag)
	if errors.Is(err, metadata.ErrNotFound) || (err == nil && checked.Before(since)) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	m, err := c.meta.GetManifest(ctx, local, tag)
	if errors.Is(err, metadata.ErrNotFound) {
		return nil, nil
	}
	return m, err
}

// expecting is m to store in a cache repository, with the blobs it names as Expected.
func expecting(m *metadata.Manifest) (*metadata.NewManifest, error) {
	pm, err := oci.ParseManifest(m.MediaType, m.Content)
	if err != nil {
		return nil, &Error{Kind: KindInvalid, Message: "upstream manifest: " + err.Error()}
	}
	nm := &metadata.NewManifest{Manifest: *m}
	seen := map[oci.Digest]bool{}
	for _, b := range pm.Blobs {
		if !seen[b.Digest] {
			seen[b.Digest] = true
			nm.Expected = append(nm.Expected, metadata.BlobRef{Digest: b.Digest, Size: b.Size})
		}
	}
	return nm, nil
}

// newManifest checks an upstream manifest body and describes it for storage.
func newManifest(ref, mediaType string, body []byte) (*metadata.Manifest, error) {
	d := digest.SHA256.FromBytes(body)
	if oci.IsDigest(ref) {
		want, err := oci.ParseDigest(ref)
		if err != nil {
			return nil, err
		}
		if got := want.Algorithm().FromBytes(body); got != want {
			return nil, &Error{Kind: KindInvalid, Message: fmt.Sprintf("manifest digest is %s, not %s", got, want)}
		}
		d = want
	}
	pm, err := oci.ParseManifest(mediaType, body)
	if err != nil {
		return nil, &Error{Kind: KindInvalid, Message: "upstream manifest: " + err.Error()}
	}
	return &metadata.Manifest{Digest: d, MediaType: pm.MediaType, ArtifactType: pm.ArtifactType,
		Subject: pm.Subject, Annotations: pm.Annotations, Content: body}, nil
}

// shared runs fn once for all concurrent callers with the same key, under a context that no
// caller's departure cancels, and counts the callers that joined a call already under way.
func (c *Cache) shared(ctx context.Context, r *Rule, key string, fn func(context.Context) (any, error)) (any, error) {
	leader := false
	ch := c.flight.DoChan(key, func() (any, error) {
		leader = true
		fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), manifestTimeout)
		defer cancel()
		v, err := fn(fctx)
		if errors.Is(err, context.DeadlineExceeded) {
			// Our own bound on the exchange ran out: an upstream failure like any other.
			err = &Error{Kind: KindTimeout, Message: "no answer within " + manifestTimeout.String(), Err: err}
		}
		return v, err
	})
	select {
	case res := <-ch:
		if !leader {
			r.stats.coalesced.Add(1)
		}
		return res.Val, res.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Tags implements registry.Cache: the upstream's tags of the repository, or the cached ones when
// the upstream fails.
func (c *Cache) Tags(ctx context.Context, local string, p metadata.Page) ([]string, bool, error) {
	r, up, err := c.rule(local)
	if err != nil {
		return nil, false, err
	}
	if auth.IsCacheOnly(ctx) {
		return c.meta.Tags(ctx, local, p)
	}
	tags, err := r.Source.Tags(ctx, up)
	if err != nil {
		if KindOf(err) == KindNotFound {
			return nil, false, clientError(err, oci.ErrNameUnknown)
		}
		return c.meta.Tags(ctx, local, p)
	}
	sort.Strings(tags)
	i := sort.SearchStrings(tags, p.Last)
	if i < len(tags) && tags[i] == p.Last {
		i++
	}
	tags = tags[i:]
	if p.N >= 0 && len(tags) > p.N {
		return tags[:p.N], true, nil
	}
	return tags, false, nil
}

// errNotCached answers a caller without the fetch grant who asks for what is not cached.
func errNotCached(code oci.Code) error {
	return oci.Errorf(code, "not in the cache, and fetching from the upstream needs the fetch grant")
}

// clientError turns an upstream failure into what the client gets when nothing cached can stand
// in: the upstream's reason, never a 404 or 500 for an upstream that is down.
func clientError(err error, notFound oci.Code) error {
	if errors.Is(err, storage.ErrInsufficientSpace) {
		// The log has the numbers (blob fill failed); the client needs only to know it may retry.
		return oci.Errorf(oci.ErrUnavailable, "the registry is short of disk space: it cannot download from the upstream now")
	}
	var ue *Error
	if !errors.As(err, &ue) {
		return err
	}
	var e *oci.Error
	switch {
	case ue.Kind == KindNotFound:
		e = oci.Errorf(notFound, "not found upstream")
	case ue.Kind == KindAuth && (ue.Status == http.StatusUnauthorized || ue.Status == http.StatusForbidden) &&
		!strings.HasPrefix(ue.Message, "token endpoint"):
		// The registry itself refused a valid token: Docker Hub's answer for repositories that do not
		// exist, or that need credentials the rule does not have.
		e = oci.Errorf(notFound, "upstream refused access (HTTP %d): the repository does not exist there or needs credentials", ue.Status)
	case ue.Kind == KindRateLimited:
		msg := "upstream rate limit reached"
		if ue.Message != "" {
			msg += ": " + ue.Message
		}
		e = oci.Errorf(oci.ErrTooManyRequests, "%s", msg)
	default:
		// Kind and status only: the cause names upstream addresses that are not the client's business.
		msg := "upstream unavailable: " + string(ue.Kind)
		if ue.Status != 0 {
			msg += fmt.Sprintf(" (HTTP %d)", ue.Status)
		}
		e = oci.Errorf(oci.ErrUnavailable, "%s", msg)
	}
	if ue.RetryAfter > 0 {
		e = e.WithHeader("Retry-After", strconv.Itoa(int((ue.RetryAfter+time.Second-1)/time.Second)))
	} else if ue.Kind == KindRateLimited {
		e = e.WithHeader("Retry-After", "60")
	}
	return e
}
