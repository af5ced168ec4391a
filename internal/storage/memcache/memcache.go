// Package memcache is a layer over a blob store that keeps the content of recently read blobs in
// memory and serves them from there with sendfile. It is for stores whose reads are expensive:
// berth puts it over the sealed layer (internal/storage/sealed), whose reads decrypt.
package memcache

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// The cache keeps the content (for the sealed layer: the plaintext) of recently read blobs in RAM,
// so that repeated downloads of the same blob (the N tasks of a deployment pulling the same layers)
// are sent with sendfile, like unencrypted ones, and only the first pays for reading the store
// below (decryption).
//
// Each cached blob is a memfd (an anonymous in-memory file: no path, no disk; its pages can reach
// swap only if the machine swaps), sealed once complete so nothing can change it. An Open of a
// cached blob reopens it through /proc/self/fd: an *os.File with an offset of its own, which
// net/http sends with sendfile and seeks for ranges. Evicting a blob closes the cache's
// descriptor; readers keep theirs, and the kernel frees the pages when the last one is closed.
//
// The first Read of a blob that the cache does not hold starts a fill (one per digest: concurrent
// misses share it, so a blob that N clients pull at once is decrypted once; and not Open, as a
// HEAD request opens a blob and reads nothing) that decrypts the whole blob in the background,
// verifying every segment, into a new memfd. The reader that Open returned reads what the fill has
// decrypted from the memfd, waits for the fill when just ahead of it, and decrypts for itself
// (as without the cache, and with the same errors) only when far ahead of it (a range near the
// end of a large blob) or when the fill ended without the blob. A fill that fails (a blob that
// does not verify) or whose blob is deleted meanwhile never enters the cache. The first download
// of a blob costs more than without the cache: the plaintext is also written to memory and read
// back.
//
// The cache bounds its own bytes: those of cached blobs plus those of fills in progress. Only
// readers that hold a blob evicted meanwhile keep more memory, until they close it.

const (
	// minCached is the smallest blob the cache keeps: smaller ones (one sealed segment) cost less
	// to read again than a cache entry (a file descriptor) is worth.
	minCached = 64 << 10
	// maxCacheEntries bounds the descriptors the cache holds (also to a quarter of RLIMIT_NOFILE).
	maxCacheEntries = 4096
	// followGap is how far ahead of a fill's progress a reader waits for the fill rather than
	// decrypting for itself.
	followGap = 32 << 20
	// perBlobFloor is the per-blob limit of caches of up to 1 GiB (but never more than the cache).
	perBlobFloor = 256 << 20
)

// errFillAbandoned ends a fill whose blob was deleted while it ran.
var errFillAbandoned = errors.New("blob deleted during the fill")

// perBlobLimit is the largest blob a cache of size bytes keeps: a quarter of it or 256 MiB,
// whichever is larger, but not more than the cache.
func perBlobLimit(size int64) int64 { return min(size, max(size/4, perBlobFloor)) }

// memCache is the memory cache of decrypted blobs: an LRU of sealed memfds bounded by bytes.
type memCache struct {
	max, perBlob int64
	maxEntries   int
	open         func(oci.Digest) (io.ReadSeekCloser, int64, error) // a reader of the blob, for a fill
	exists       func(oci.Digest) bool                              // whether the blob is still in the store

	mu      sync.Mutex
	lru     list.List // of *cacheEntry, the most recently used first
	entries map[oci.Digest]*list.Element
	fills   map[oci.Digest]*fill // in progress
	used    int64                // bytes of entries and of fills in progress
	filling int64                // bytes of fills in progress
	started int64                // fills started, ever
	closing []*os.File           // memfds dropped, to close once mu is unlocked

	wg sync.WaitGroup // fills in progress, and closes of dropped memfds
	// beforeFinish, if set (tests), runs when a fill has copied the blob, before it is judged.
	beforeFinish func(*fill)
}

type cacheEntry struct {
	d    oci.Digest
	f    *os.File // the sealed memfd; reopened under mu only, closed once out of the cache
	size int64
}

// newMemCache makes a cache of size bytes (> 0), after checking that the system has memfds, that
// they can be sealed and that they can be reopened through /proc/self/fd.
func newMemCache(size int64, open func(oci.Digest) (io.ReadSeekCloser, int64, error), exists func(oci.Digest) bool) (*memCache, error) {
	probe, err := newMemfd("berth-probe")
	if err != nil {
		return nil, err
	}
	defer probe.Close()
	if err := seal(probe); err != nil {
		return nil, err
	}
	f, err := reopenMemfd(probe)
	if err != nil {
		return nil, err
	}
	f.Close()
	entries := maxCacheEntries
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_NOFILE, &rl) == nil && rl.Cur/4 < uint64(entries) {
		entries = max(16, int(rl.Cur/4))
	}
	return &memCache{
		max: size, perBlob: perBlobLimit(size), maxEntries: entries, open: open, exists: exists,
		entries: map[oci.Digest]*list.Element{}, fills: map[oci.Digest]*fill{},
	}, nil
}

// newMemfd makes an empty memfd that can be sealed.
func newMemfd(name string) (*os.File, error) {
	fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	if err != nil {
		return nil, fmt.Errorf("memory cache: memfd_create: %w", err)
	}
	return os.NewFile(uintptr(fd), "memfd:"+name), nil
}

// seal makes the memfd f immutable: no write, no change of size, no change of the seals, through
// any descriptor.
func seal(f *os.File) error {
	_, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE|unix.F_SEAL_GROW|unix.F_SEAL_SHRINK|unix.F_SEAL_SEAL)
	if err != nil {
		return fmt.Errorf("memory cache: sealing a memfd: %w", err)
	}
	return nil
}

// reopenMemfd opens f again, read-only: a new open file description, with an offset of its own (a
// dup would share f's), that stays valid after f is closed.
func reopenMemfd(f *os.File) (*os.File, error) {
	r, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	if err != nil {
		return nil, fmt.Errorf("memory cache: reopening a memfd: %w", err)
	}
	return r, nil
}

// get returns a file of its own onto the cached plaintext of d, if the cache holds it.
func (c *memCache) get(d oci.Digest) (*os.File, int64, bool) {
	if c == nil {
		return nil, 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.entries[d]
	if !ok {
		return nil, 0, false
	}
	e := el.Value.(*cacheEntry)
	f, err := reopenMemfd(e.f)
	if err != nil { // out of descriptors, say: decrypt instead
		return nil, 0, false
	}
	c.lru.MoveToFront(el)
	return f, e.size, true
}

// reader returns what an Open that missed serves d with, given sr, a reader of the store below:
// sr itself if d is not to be cached, else a reader that follows the fill of d from its first
// Read on. (Not from Open on: a HEAD request opens a blob and reads nothing.)
func (c *memCache) reader(d oci.Digest, sr io.ReadSeekCloser, size int64) io.ReadSeekCloser {
	if c == nil || size < minCached || size > c.perBlob {
		return sr
	}
	return &fillReader{c: c, d: d, sr: sr, size: size}
}

// follow returns the fill of d, of size bytes, and a descriptor of its own onto its memfd: the
// one in progress, a new one, or (if d is cached by now) a finished one; nil if there is no room
// or no descriptor.
func (c *memCache) follow(d oci.Digest, size int64) (*fill, *os.File) {
	c.mu.Lock()
	defer c.unlock()
	if el, ok := c.entries[d]; ok {
		f, err := reopenMemfd(el.Value.(*cacheEntry).f)
		if err != nil {
			return nil, nil
		}
		c.lru.MoveToFront(el)
		return &fill{d: d, size: size, written: size, done: true}, f
	}
	fl := c.fills[d]
	if fl == nil {
		if fl = c.startLocked(d, size); fl == nil {
			return nil, nil
		}
	}
	f, err := reopenMemfd(fl.mf)
	if err != nil {
		return nil, nil
	}
	return fl, f
}

// startLocked starts a fill of d, of size bytes, making room for it; nil if there is none (fills
// in progress take it all) or no memfd.
func (c *memCache) startLocked(d oci.Digest, size int64) *fill {
	if c.filling+size > c.max || len(c.fills) >= c.maxEntries {
		return nil
	}
	for c.lru.Len() > 0 && (c.used+size > c.max || c.lru.Len()+len(c.fills) >= c.maxEntries) {
		c.evictLocked(c.lru.Back())
	}
	mf, err := newMemfd("berth:" + string(d))
	if err != nil {
		return nil
	}
	fl := &fill{d: d, size: size, mf: mf}
	fl.cond.L = &fl.mu
	c.fills[d] = fl
	c.used += size
	c.filling += size
	c.started++
	c.wg.Add(1)
	go c.run(fl)
	return fl
}

func (c *memCache) evictLocked(el *list.Element) {
	e := c.lru.Remove(el).(*cacheEntry)
	delete(c.entries, e.d)
	c.used -= e.size
	c.closing = append(c.closing, e.f)
}

// unlock unlocks mu, and closes the memfds dropped meanwhile in the background: closing the last
// descriptor of a large one frees its pages, which takes a while (some 50 ms for 256 MiB), and
// the Open that made room for another blob need not wait for it.
func (c *memCache) unlock() {
	closing := c.closing
	c.closing = nil
	c.mu.Unlock()
	if len(closing) > 0 {
		c.wg.Go(func() {
			for _, f := range closing {
				f.Close()
			}
		})
	}
}

// run decrypts the blob of fl into its memfd, then caches it, or discards it.
func (c *memCache) run(fl *fill) {
	defer c.wg.Done()
	err := fl.copy(c.open)
	if err == nil {
		err = seal(fl.mf) // nothing can change the plaintext now, not even through fl.mf
	}
	if c.beforeFinish != nil {
		c.beforeFinish(fl)
	}
	c.mu.Lock()
	if c.fills[fl.d] == fl {
		delete(c.fills, fl.d)
	}
	c.filling -= fl.size
	if err == nil && fl.abandoned.Load() {
		err = errFillAbandoned
	}
	// Delete removes the file, then drops d: a blob deleted before this check is seen here,
	// one deleted after it is dropped after the insertion.
	if err == nil && !c.exists(fl.d) {
		err = errFillAbandoned
	}
	if _, dup := c.entries[fl.d]; dup { // cannot happen: a fill runs only for what is not cached
		err = errors.Join(err, errors.New("already cached"))
	}
	if err == nil {
		c.entries[fl.d] = c.lru.PushFront(&cacheEntry{d: fl.d, f: fl.mf, size: fl.size})
	} else {
		c.used -= fl.size
		c.closing = append(c.closing, fl.mf)
	}
	fl.end()
	c.unlock()
}

// drop removes d from the cache and abandons its fill, if one runs.
func (c *memCache) drop(d oci.Digest) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.unlock()
	if el, ok := c.entries[d]; ok {
		c.evictLocked(el)
	}
	if fl := c.fills[d]; fl != nil {
		fl.abandoned.Store(true)
		delete(c.fills, d)
	}
}

// wait waits for the fills in progress and the closes of dropped memfds (tests).
func (c *memCache) wait() { c.wg.Wait() }

// fill reads one blob into a memfd. Its plaintext up to written is final.
type fill struct {
	d         oci.Digest
	size      int64
	mf        *os.File // written by the fill, then the cache entry's; reopened under memCache.mu only
	abandoned atomic.Bool

	mu      sync.Mutex
	cond    sync.Cond
	written int64
	done    bool // cached, or discarded: readers read the rest for themselves
}

// copyBuf holds the buffers of fills.
var copyBuf = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

// copy reads the whole blob into mf.
func (fl *fill) copy(open func(oci.Digest) (io.ReadSeekCloser, int64, error)) error {
	sr, size, err := open(fl.d)
	if err != nil {
		return err
	}
	defer sr.Close()
	if size != fl.size {
		return errors.New("memory cache: the blob's size changed")
	}
	bp := copyBuf.Get().(*[]byte)
	defer func() { clear(*bp); copyBuf.Put(bp) }()
	for off := int64(0); off < size; {
		if fl.abandoned.Load() {
			return errFillAbandoned
		}
		n, err := sr.Read((*bp)[:min(int64(len(*bp)), size-off)])
		if n > 0 {
			if _, err := fl.mf.WriteAt((*bp)[:n], off); err != nil {
				return err
			}
			off += int64(n)
			fl.mu.Lock()
			fl.written = off
			fl.cond.Broadcast()
			fl.mu.Unlock()
		}
		if errors.Is(err, io.EOF) && off < size {
			return io.ErrUnexpectedEOF
		}
		if err != nil && !errors.Is(err, io.EOF) {
			return err
		}
	}
	return nil
}

func (fl *fill) end() {
	fl.mu.Lock()
	fl.done = true
	fl.cond.Broadcast()
	fl.mu.Unlock()
}

// available is how much of the blob the fill has decrypted, once it has reached end (or the end
// of the blob), has ended, or is followGap or more behind off.
func (fl *fill) available(off, end int64) int64 {
	end = min(end, fl.size)
	fl.mu.Lock()
	defer fl.mu.Unlock()
	for !fl.done && fl.written < end && off < fl.written+followGap {
		fl.cond.Wait()
	}
	return fl.written
}

// fillReader reads a blob that the cache does not hold (yet) while a fill reads it: from the
// fill's memfd what the fill has, from the store below (sr) what it does not have.
type fillReader struct {
	c        *memCache
	d        oci.Digest
	followed bool     // the first Read looked for the fill
	fl       *fill    // nil: none, sr reads it all
	mf       *os.File // a descriptor of its own onto the fill's memfd, read with pread
	sr       io.ReadSeekCloser
	pos      int64
	size     int64
}

// Read implements io.Reader.
func (r *fillReader) Read(p []byte) (int, error) {
	if r.sr == nil {
		return 0, os.ErrClosed
	}
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if !r.followed {
		r.followed = true
		r.fl, r.mf = r.c.follow(r.d, r.size)
	}
	if r.fl != nil {
		// Waiting for the whole of p, not just a first byte, makes fewer and larger reads and
		// writes.
		if avail := r.fl.available(r.pos, r.pos+int64(len(p))); r.pos < avail {
			n, err := r.mf.ReadAt(p[:min(int64(len(p)), avail-r.pos)], r.pos)
			r.pos += int64(n)
			if err == io.EOF && n > 0 {
				err = nil
			}
			return n, err
		}
	}
	if _, err := r.sr.Seek(r.pos, io.SeekStart); err != nil {
		return 0, err
	}
	n, err := r.sr.Read(p)
	r.pos += int64(n)
	return n, err
}

// Seek implements io.Seeker.
func (r *fillReader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.size
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	r.pos = offset
	return offset, nil
}

// Close implements io.Closer.
func (r *fillReader) Close() error {
	if r.sr == nil {
		return os.ErrClosed
	}
	err := r.sr.Close()
	if r.mf != nil {
		err = errors.Join(err, r.mf.Close())
	}
	r.sr = nil
	return err
}

// Store is the layer: a storage.BlobStore whose reads of blobs of minCached bytes up to the
// per-blob limit go through the cache, and whose other methods are those of the store below. It
// is a storage.Spooler when the store below is (the sealed layer), and passes FreeSpace and Ping
// through.
type Store struct {
	storage.BlobStore
	c *memCache
}

// New puts a cache of size bytes (> 0) over inner. It fails when the system cannot provide one
// (no memfd_create, no /proc): inner is then to be used as it is.
func New(inner storage.BlobStore, size int64) (*Store, error) {
	s := &Store{BlobStore: inner}
	var err error
	s.c, err = newMemCache(size, func(d oci.Digest) (io.ReadSeekCloser, int64, error) {
		return inner.Open(context.Background(), d)
	}, func(d oci.Digest) bool {
		_, err := inner.Stat(context.Background(), d)
		return err == nil
	})
	if err != nil {
		return nil, err
	}
	return s, nil
}

// Info reports the size of the cache in bytes and the largest blob it keeps.
func (s *Store) Info() (size, perBlob int64) { return s.c.max, s.c.perBlob }

// Open implements storage.BlobStore: a blob the cache holds is an *os.File onto its content in
// memory (which net/http sends with sendfile); one it does not hold yet is read while a fill
// puts it there.
func (s *Store) Open(ctx context.Context, d oci.Digest) (io.ReadSeekCloser, int64, error) {
	if f, size, ok := s.c.get(d); ok {
		return f, size, nil
	}
	r, size, err := s.BlobStore.Open(ctx, d)
	if err != nil {
		return nil, 0, err
	}
	return s.c.reader(d, r, size), size, nil
}

// Delete implements storage.BlobStore. It drops the blob from the cache too; readers that have it
// open keep reading it, as they keep reading a deleted file.
func (s *Store) Delete(ctx context.Context, d oci.Digest) error {
	err := s.BlobStore.Delete(ctx, d)
	s.c.drop(d)
	return err
}

// NewSpool implements storage.Spooler when the store below is one.
func (s *Store) NewSpool(ctx context.Context) (storage.Spool, error) {
	sp, ok := s.BlobStore.(storage.Spooler)
	if !ok {
		return nil, errors.New("memory cache: the store below has no spools")
	}
	return sp.NewSpool(ctx)
}

// FreeSpace passes the store below's storage.FreeSpacer through; without one, it knows no limit.
func (s *Store) FreeSpace() (int64, error) {
	if fs, ok := s.BlobStore.(storage.FreeSpacer); ok {
		return fs.FreeSpace()
	}
	return math.MaxInt64, nil
}

// Ping passes the store below's health check through.
func (s *Store) Ping(ctx context.Context) error {
	if p, ok := s.BlobStore.(interface{ Ping(context.Context) error }); ok {
		return p.Ping(ctx)
	}
	return nil
}

// RemoveTemps passes the store below's storage.TempRemover through.
func (s *Store) RemoveTemps() (int, error) {
	if tr, ok := s.BlobStore.(storage.TempRemover); ok {
		return tr.RemoveTemps()
	}
	return 0, nil
}
