package console

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// maxListed bounds the repositories one page lists (a filter narrows them).
const maxListed = 500

type repoRow struct {
	Name   string
	Cached string // the pull-through rule's prefix, when the repository is a cache
}

// repositories lists the repositories the user may pull, as the catalog would.
func (c *Console) repositories(q *request) error {
	ctx := q.r.Context()
	filter := strings.TrimSpace(q.r.URL.Query().Get("q"))
	var rows []repoRow
	more := false
	page := metadata.Page{N: 1000}
	for {
		names, next, err := c.opt.Store.Repositories(ctx, page)
		if err != nil {
			return err
		}
		for _, n := range names {
			if filter != "" && !strings.Contains(n, filter) {
				continue
			}
			if !c.opt.Auth.CanList(ctx, q.p, n) {
				continue
			}
			if len(rows) == maxListed {
				more = true
				break
			}
			rows = append(rows, repoRow{Name: n, Cached: c.cachedBy(n)})
		}
		if !next || more || len(names) == 0 {
			break
		}
		page.Last = names[len(names)-1]
	}
	c.render(q.w, q, http.StatusOK, "repositories", map[string]any{
		"Title": "Repositories", "Repos": rows, "Filter": filter, "More": more, "Max": maxListed,
	})
	return nil
}

// cachedBy is the prefix of the pull-through rule that caches repo, or "".
func (c *Console) cachedBy(repo string) string {
	if c.opt.Cache == nil {
		return ""
	}
	for _, st := range c.opt.Cache.Status() {
		if strings.HasPrefix(repo, st.Prefix+"/") {
			return st.Prefix
		}
	}
	return ""
}

// manifestRow is one manifest of a repository as the pages show it.
type manifestRow struct {
	Digest     oci.Digest
	Tags       []string
	Kind       string // "image", "index", or an artifact's type
	Platforms  []string
	Size       int64 // of the image's config and layers; of every stored child's for an index
	Pushed     time.Time
	LastPull   time.Time
	Referrers  int
	Subject    oci.Digest
	MediaType  string
	Children   []childRow
	Layers     []oci.Descriptor
	Annotation map[string]string
}

type childRow struct {
	Digest   oci.Digest
	Platform string
	Size     int64
	Stored   bool
}

type tagRow struct {
	Tag string
	*manifestRow
}

// repository shows a repository's tags (/ui/repo/NAME) or one manifest (?digest=).
func (c *Console) repository(q *request) error {
	ctx := q.r.Context()
	name := strings.TrimSuffix(strings.TrimPrefix(q.r.URL.Path, Prefix+"repo/"), "/")
	// What the API answers a caller who may not pull: 404, whether the repository exists or not.
	if !oci.ValidName(name) || !c.opt.Auth.CanList(ctx, q.p, name) {
		return errNotFound
	}
	entries, err := c.opt.Store.ListManifests(ctx, name)
	if err != nil {
		return err
	}
	if entries == nil {
		return errNotFound
	}
	pulls, err := c.opt.Store.LastPulled(ctx, name)
	if err != nil {
		return err
	}
	want := q.r.URL.Query().Get("digest")
	rows := c.describe(ctx, entries, pulls, oci.Digest(want))
	host := q.r.Host
	if want != "" {
		d, err := oci.ParseDigest(want)
		if err != nil {
			return errNotFound
		}
		m := rows[d]
		if m == nil {
			return errNotFound
		}
		refs, err := c.opt.Store.Referrers(ctx, name, d, "")
		if err != nil {
			return err
		}
		c.render(q.w, q, http.StatusOK, "manifest", map[string]any{
			"Title": name + "@" + shortDigest(d), "Repo": name, "M": m, "Referrers": refs,
			"Pull": "docker pull " + host + "/" + name + "@" + string(d),
		})
		return nil
	}
	var tags []tagRow
	untagged := 0
	for _, e := range entries {
		m := rows[e.Digest]
		for _, t := range e.Tags {
			tags = append(tags, tagRow{Tag: t, manifestRow: m})
		}
		if len(e.Tags) == 0 && m.Subject == "" && !c.isChild(e.Digest, rows) {
			untagged++
		}
	}
	slices.SortFunc(tags, func(a, b tagRow) int { return strings.Compare(a.Tag, b.Tag) })
	c.render(q.w, q, http.StatusOK, "repository", map[string]any{
		"Title": name, "Repo": name, "Tags": tags, "Untagged": untagged, "Host": host, "Cached": c.cachedBy(name),
	})
	return nil
}

func (c *Console) isChild(d oci.Digest, rows map[oci.Digest]*manifestRow) bool {
	for _, m := range rows {
		for _, ch := range m.Children {
			if ch.Digest == d {
				return true
			}
		}
	}
	return false
}

// describe parses a repository's manifests: kinds, platforms, sizes, referrer counts. The platform
// of an image (in its config blob) is read for tagged images and for shown only: a cached
// repository may hold thousands of untagged manifests.
func (c *Console) describe(ctx context.Context, entries []metadata.ManifestEntry, pulls map[oci.Digest]time.Time, shown oci.Digest) map[oci.Digest]*manifestRow {
	rows := make(map[oci.Digest]*manifestRow, len(entries))
	parsed := make(map[oci.Digest]*oci.Manifest, len(entries))
	for _, e := range entries {
		row := &manifestRow{Digest: e.Digest, Tags: e.Tags, Pushed: e.Created, LastPull: pulls[e.Digest], MediaType: e.MediaType}
		rows[e.Digest] = row
		m, err := oci.ParseManifest(e.MediaType, e.Content)
		if err != nil {
			row.Kind = "unreadable"
			continue
		}
		parsed[e.Digest] = m
		row.Subject = m.Subject
		row.Annotation = m.Annotations
		if oci.IsIndex(m.MediaType) {
			row.Kind = "index"
			continue
		}
		for _, b := range m.Blobs {
			row.Size += b.Size
		}
		if len(m.Blobs) > 1 {
			row.Layers = m.Blobs[1:]
		}
		if isImageConfig(m.Blobs[0].MediaType) {
			row.Kind = "image"
			if len(e.Tags) == 0 && e.Digest != shown {
				continue
			}
			if p := c.platform(ctx, m.Blobs[0]); p != "" {
				row.Platforms = []string{p}
			}
		} else {
			row.Kind = m.ArtifactType
		}
	}
	for d, m := range parsed {
		row := rows[d]
		if m.Subject != "" {
			if s := rows[m.Subject]; s != nil {
				s.Referrers++
			}
		}
		for _, ch := range m.Children {
			cr := childRow{Digest: ch.Digest, Platform: platformString(ch.Platform)}
			if stored := rows[ch.Digest]; stored != nil {
				cr.Stored, cr.Size = true, stored.Size
				row.Size += stored.Size
			}
			if cr.Platform != "" && !slices.Contains(row.Platforms, cr.Platform) {
				row.Platforms = append(row.Platforms, cr.Platform)
			}
			row.Children = append(row.Children, cr)
		}
	}
	return rows
}

func isImageConfig(mediaType string) bool {
	return mediaType == "application/vnd.oci.image.config.v1+json" || mediaType == "application/vnd.docker.container.image.v1+json"
}

type platformJSON struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Variant      string `json:"variant"`
}

func (p platformJSON) String() string {
	if p.OS == "" && p.Architecture == "" {
		return ""
	}
	s := p.OS + "/" + p.Architecture
	if p.Variant != "" {
		s += "/" + p.Variant
	}
	return s
}

func platformString(raw json.RawMessage) string {
	var p platformJSON
	if len(raw) == 0 || json.Unmarshal(raw, &p) != nil {
		return ""
	}
	return p.String()
}

// platform reads an image's config for its platform ("" when it is not stored: a cached image's
// config that was never pulled).
func (c *Console) platform(ctx context.Context, config oci.Descriptor) string {
	if c.opt.Blobs == nil || config.Size > 1<<20 {
		return ""
	}
	rc, _, err := c.opt.Blobs.Open(ctx, config.Digest)
	if err != nil {
		return ""
	}
	defer rc.Close()
	var p platformJSON
	if json.NewDecoder(io.LimitReader(rc, 1<<20)).Decode(&p) != nil {
		return ""
	}
	return p.String()
}

func shortDigest(d oci.Digest) string {
	s := string(d)
	if _, hex, ok := strings.Cut(s, ":"); ok && len(hex) > 12 {
		return hex[:12]
	}
	return s
}

// visibleRules are the pull-through rules whose counters the user may see: an administrator of
// the rule's repositories, as for GET /berth/v1/upstreams.
func (c *Console) visibleRules(q *request) []string {
	if c.opt.Cache == nil {
		return nil
	}
	var out []string
	for _, st := range c.opt.Cache.Status() {
		if ok, err := c.opt.Auth.AdminOf(q.r.Context(), q.p, st.Prefix+"/*"); ok && err == nil {
			out = append(out, st.Prefix)
		}
	}
	return out
}
