// Package hot keeps the manifests that metadata.Store.GetManifest returns in memory, so that a
// manifest pull (the most frequent request a registry answers) costs no database round trip.
//
// The cache is exact for a process that is the only writer of its store (Options.Exclusive: the
// SQLite database of one berth process, which the account commands never write manifests or tags
// to): every method that changes what GetManifest returns goes through the Store and drops what
// it may have changed. Replicas sharing a store stay exact with Peers (peers.go). Without either,
// only lookups by digest are cached: what a digest names in a repository never changes, it can
// only be deleted.
package hot

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// DefaultMaxBytes is the memory cache's default bound: 64 MiB of manifests.
const DefaultMaxBytes = 64 << 20

// entryOverhead is what an entry costs besides its content (the struct, the map slots, the
// strings of its key and metadata), counted against MaxBytes so that many tiny manifests are
// bounded too.
const entryOverhead = 512

// Options configure a Store.
type Options struct {
	// Exclusive says that this process is the only writer of the store: tags are cached too.
	// Otherwise only lookups by digest are cached, and a manifest another process deletes may
	// still be served from memory by this one until it is evicted.
	Exclusive bool
	// MaxBytes bounds the memory the cached manifests take (content and per-entry overhead);
	// the least recently used go first. 0 or less turns the cache off.
	MaxBytes int64
}

// Store is a metadata.Store that answers GetManifest from memory when it can. Every other
// method is the underlying store's; those that change manifests or tags also drop what they
// change from memory.
//
// The manifests it returns are shared between callers: their Content and Annotations must not be
// modified (nothing in berth does).
type Store struct {
	metadata.Store
	opt Options

	// gen counts writes. A GetManifest that missed remembers gen before it reads the store, and
	// keeps what it read only if no write has ended meanwhile: a read racing a write can then
	// never put back what the write just dropped.
	gen atomic.Uint64

	mu    sync.RWMutex
	repos map[string]map[string]*entry // repository -> reference -> entry
	size  int64                        // bytes of every entry, as cost counts them

	peers *Peers // the other replicas sharing the store, if any (NewPeers)
}

type entry struct {
	m    *metadata.Manifest
	cost int64
	used atomic.Int64 // when it was last returned (UnixNano), for eviction
}

// New returns s with a memory cache in front of GetManifest.
func New(s metadata.Store, o Options) *Store {
	return &Store{Store: s, opt: o, repos: map[string]map[string]*entry{}}
}

// cacheable says whether a lookup of reference may be kept.
func (s *Store) cacheable(reference string) bool {
	if s.opt.MaxBytes <= 0 {
		return false
	}
	if s.peers != nil {
		return s.peers.Serving()
	}
	return s.opt.Exclusive || oci.IsDigest(reference)
}

// GetManifest implements metadata.Store: from memory, else from the store (then kept).
func (s *Store) GetManifest(ctx context.Context, repo, reference string) (*metadata.Manifest, error) {
	if !s.cacheable(reference) {
		return s.Store.GetManifest(ctx, repo, reference)
	}
	s.mu.RLock()
	e := s.repos[repo][reference]
	s.mu.RUnlock()
	if e != nil {
		// Recency to the second is enough for eviction, and spares the cores a write to a
		// shared cache line on every hit.
		if now := time.Now().UnixNano(); now-e.used.Load() > int64(time.Second) {
			e.used.Store(now)
		}
		m := *e.m
		return &m, nil
	}
	g := s.gen.Load()
	m, err := s.Store.GetManifest(ctx, repo, reference)
	if err != nil {
		return nil, err
	}
	s.keep(g, repo, reference, m)
	c := *m
	return &c, nil
}

// keep stores m as what reference names in repo, unless a write ended since gen was g.
func (s *Store) keep(g uint64, repo, reference string, m *metadata.Manifest) {
	e := &entry{m: m, cost: int64(len(m.Content)) + int64(len(repo)+len(reference)) + entryOverhead}
	if e.cost > s.opt.MaxBytes {
		return
	}
	e.used.Store(time.Now().UnixNano())
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen.Load() != g {
		return
	}
	refs := s.repos[repo]
	if refs == nil {
		refs = map[string]*entry{}
		s.repos[repo] = refs
	}
	if old := refs[reference]; old != nil {
		s.size -= old.cost
	}
	refs[reference] = e
	s.size += e.cost
	if s.size > s.opt.MaxBytes {
		s.evict()
	}
}

// evict drops the least recently used entries until the cache is down to 7/8 of its bound, so
// that the sort it takes is paid once per eighth of the bound, not per insert. s.mu is held.
func (s *Store) evict() {
	type victim struct {
		repo, ref string
		used      int64
	}
	var all []victim
	for repo, refs := range s.repos {
		for ref, e := range refs {
			all = append(all, victim{repo, ref, e.used.Load()})
		}
	}
	slices.SortFunc(all, func(a, b victim) int { return cmp.Compare(a.used, b.used) })
	target := s.opt.MaxBytes - s.opt.MaxBytes/8
	for _, v := range all {
		if s.size <= target {
			break
		}
		s.drop(v.repo, v.ref)
	}
}

// drop removes one entry. s.mu is held.
func (s *Store) drop(repo, reference string) {
	refs := s.repos[repo]
	if e := refs[reference]; e != nil {
		s.size -= e.cost
		delete(refs, reference)
		if len(refs) == 0 {
			delete(s.repos, repo)
		}
	}
}

// dropRepo removes every entry of repo. s.mu is held.
func (s *Store) dropRepo(repo string) {
	for _, e := range s.repos[repo] {
		s.size -= e.cost
	}
	delete(s.repos, repo)
}

// clear drops every entry, as a write of everything would.
func (s *Store) clear() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen.Add(1)
	s.repos = map[string]map[string]*entry{}
	s.size = 0
}

// wrote ends a write to repo: it drops what the write may have changed (refs, or every entry of
// repo when all is set) from this process's memory, then waits for the other replicas' (Peers.Sync).
// It runs whether the write succeeded or not (a write reported as failed may have committed).
func (s *Store) wrote(ctx context.Context, repo string, all bool, refs ...string) {
	s.invalidate(repo, all, refs...)
	if s.peers != nil {
		s.peers.Sync(ctx)
	}
}

// invalidate ends a write: it counts it (so that reads that began before it keep nothing) and
// drops the given references of repo, or all of repo's entries when refs is nil. It runs after
// the write, whether it succeeded or not (a write reported as failed may have been committed).
func (s *Store) invalidate(repo string, all bool, refs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen.Add(1)
	if all {
		s.dropRepo(repo)
		return
	}
	for _, r := range refs {
		s.drop(repo, r)
	}
}

// PutManifest implements metadata.Store; it drops the tags it moves (and the digest, which it
// may be storing for the first time).
func (s *Store) PutManifest(ctx context.Context, repo string, m *metadata.NewManifest, tags ...string) error {
	err := s.Store.PutManifest(ctx, repo, m, tags...)
	s.wrote(ctx, repo, false, append(slices.Clone(tags), m.Digest.String())...)
	return err
}

// DeleteManifest implements metadata.Store; it drops every entry of the repository, since the
// tags that pointed at the manifest go with it.
func (s *Store) DeleteManifest(ctx context.Context, repo string, d oci.Digest) error {
	err := s.Store.DeleteManifest(ctx, repo, d)
	s.wrote(ctx, repo, true)
	return err
}

// DeleteTag implements metadata.Store.
func (s *Store) DeleteTag(ctx context.Context, repo, tag string) error {
	err := s.Store.DeleteTag(ctx, repo, tag)
	s.wrote(ctx, repo, false, tag)
	return err
}

// Len reports how many manifest lookups are held and the bytes they count for.
func (s *Store) Len() (entries int, bytes int64) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, refs := range s.repos {
		entries += len(refs)
	}
	return entries, s.size
}

// Holds reports whether what reference names in repo is in memory.
func (s *Store) Holds(repo, reference string) bool {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.repos[repo][reference] != nil
}
