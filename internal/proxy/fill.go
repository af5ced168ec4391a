package proxy

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// fill is one upstream blob download in progress. It writes to a temporary file; every client that
// asked for the blob meanwhile reads that file as it grows, so N clients cost one upstream GET and
// none waits for the whole download. The last byte is held back from every client until the
// content is verified against its digest: a truncated or corrupt upstream body ends each client's
// response early (an error), never as a complete response with wrong bytes.
type fill struct {
	mu      sync.Mutex
	cond    *sync.Cond
	ready   bool  // size known and file open
	size    int64 // -1 when the upstream did not say
	written int64
	done    bool
	err     error
	file    *os.File // read side, shared by the readers (ReadAt); closed by the last one out
	// spool replaces file when the store cannot hold plaintext in a file (encryption at rest):
	// written by run, read by every reader, closed by the last one out.
	spool storage.Spool
	users int
	// stored: the blob was in the store when the fill began (typically a fill of the same blob
	// that ended just before stored it) and is now linked; the readers serve it from the store.
	stored bool
	rule   *Rule
	// ended is closed when the fill is done, for those who wait without reading (decide).
	ended chan struct{}
}

// closeReadSide closes what the readers read; callers hold f.mu.
func (f *fill) closeReadSide() {
	if f.file != nil {
		f.file.Close()
		f.file = nil
	}
	if f.spool != nil {
		f.spool.Close()
		f.spool = nil
	}
}

// wakeStep is how many new bytes of a fill wake its readers.
const wakeStep = 1 << 20

// ServeBlob implements registry.Cache: it answers GET or HEAD of a blob that the cached repository
// local does not hold yet, from the upstream, and stores it for the next request.
func (c *Cache) ServeBlob(w http.ResponseWriter, r *http.Request, local string, d oci.Digest) error {
	ctx := r.Context()
	rule, up, err := c.rule(local)
	if err != nil {
		return err
	}
	if auth.IsCacheOnly(ctx) {
		return errNotCached(oci.ErrBlobUnknown)
	}
	// The bytes may already be here (another repository, an earlier fill).
	p, err := c.decide(ctx, rule, local, up, d)
	if err != nil {
		return clientError(err, oci.ErrBlobUnknown)
	}
	if p.action == serveStored {
		rule.stats.hits.Add(1)
		return c.serveLocal(w, r, d)
	}
	if r.Method == http.MethodHead {
		// A HEAD is answered by the upstream's HEAD (free), without downloading anything.
		size, err := rule.Source.HeadBlob(ctx, up, d)
		if err != nil {
			return clientError(err, oci.ErrBlobUnknown)
		}
		w.Header().Set("Docker-Content-Digest", d.String())
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
		return nil
	}
	f := c.join(rule, local, up, d)
	defer c.leave(f)
	return c.serveFill(w, r, f, d)
}

// serveLocal serves a stored blob (once a fill is done, the registry's own path does this).
func (c *Cache) serveLocal(w http.ResponseWriter, r *http.Request, d oci.Digest) error {
	rc, _, err := c.blobs.Open(r.Context(), d)
	if err != nil {
		return err
	}
	defer rc.Close()
	w.Header().Set("Docker-Content-Digest", d.String())
	w.Header().Set("Content-Type", "application/octet-stream")
	http.ServeContent(w, r, "", time.Time{}, rc)
	return nil
}

// join returns the fill of d for the repository local in flight, or starts one. Fills are per
// repository: a request joins only a download that the upstream confirmed for its own repository.
//
// A fill leaves c.fills only once its blob is stored and linked (or it failed). A request that saw
// the blob missing may come here after the fill of it left, so a new fill looks at the store
// before it downloads anything (run); with the fill in c.fills meanwhile, later requests join it.
func (c *Cache) join(rule *Rule, local, up string, d oci.Digest) *fill {
	key := local + "@" + d.String()
	c.mu.Lock()
	defer c.mu.Unlock()
	if f := c.fills[key]; f != nil {
		f.mu.Lock()
		f.users++
		f.mu.Unlock()
		rule.stats.coalesced.Add(1)
		return f
	}
	f := &fill{size: -1, users: 1, rule: rule, ended: make(chan struct{})}
	f.cond = sync.NewCond(&f.mu)
	c.fills[key] = f
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		err := c.run(f, rule, local, up, d)
		c.mu.Lock()
		delete(c.fills, key)
		c.mu.Unlock()
		f.mu.Lock()
		f.done, f.err = true, err
		if f.users == 0 {
			f.closeReadSide()
		}
		f.cond.Broadcast()
		f.mu.Unlock()
		close(f.ended)
		if err != nil {
			c.log.Warn("blob fill failed", "repository", local, "digest", d, "err", err)
		}
	}()
	return f
}

// leave drops a reader; the last one out closes the shared read side.
func (c *Cache) leave(f *fill) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.users--
	if f.users == 0 && f.done {
		f.closeReadSide()
	}
}

// run downloads d into a temporary file, verifies it and stores it; its context belongs to no
// client, so the fill completes even if the client that started it leaves. It plans again first
// (see join): a blob that was linked meanwhile is not downloaded, the fill ends marked stored.
//
// The download is bounded: by the size a manifest of the repository declares (an upstream
// Content-Length that disagrees is refused before a byte is read), else by the Content-Length,
// else by proxy.max_fill_size; a body longer than its bound is cut one byte past it and fails.
// Nothing is written that would leave less than min_free_space free on the store's filesystem.
//
// Replicas sharing a store download a blob once (leased): the others wait until it is stored.
func (c *Cache) run(f *fill, rule *Rule, local, up string, d oci.Digest) error {
	ctx, cancel := context.WithTimeout(c.base, blobTimeout)
	defer cancel()
	var p blobPlan
	stored, err := c.leased(ctx, "fill "+local+"@"+d.String(), func(ctx context.Context) (bool, error) {
		var err error
		p, err = c.decide(ctx, rule, local, up, d)
		return err == nil && p.action == serveStored, err
	}, func(ctx context.Context) error {
		return c.download(ctx, f, rule, local, up, d, p)
	})
	if stored {
		rule.stats.hits.Add(1)
		if c.relays() {
			return c.relay(ctx, f, d)
		}
		f.mu.Lock()
		f.stored = true
		f.mu.Unlock()
	}
	return err
}

// relays reports whether the clients of a fill that finds the blob stored (by another replica)
// share one read of it: when the store is object storage, where each client's own read would
// be a GET of the whole blob from the bucket. Not on a filesystem (each client reads the file
// with sendfile), nor with encryption (the memory cache layer shares the reads there, and a
// temporary file would hold plaintext).
func (c *Cache) relays() bool {
	_, local := c.blobs.(storage.FileAdopter)
	_, sealed := c.blobs.(storage.Spooler)
	return !local && !sealed
}

// relay reads stored blob d once into a temporary file, which the fill's clients read as it
// grows, as they read an upstream body.
func (c *Cache) relay(ctx context.Context, f *fill, d oci.Digest) error {
	rc, size, err := c.blobs.Open(ctx, d)
	if err != nil {
		return err
	}
	defer rc.Close()
	pm := pumping{f: f, body: rc, size: size, bound: size, d: d, stored: true, space: func(int64) error { return nil }}
	tmp, err := c.toFile(&pm)
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	_, err = pm.run()
	return err
}

// toFile creates the temporary file into which pm writes and from which the fill's readers read
// as it grows, and hands it to them; the caller runs pm, and removes the file (a no-op once it
// is adopted into the store).
func (c *Cache) toFile(pm *pumping) (*os.File, error) {
	tmp, err := c.createTemp()
	if err != nil {
		return nil, err
	}
	read, err := os.Open(tmp.Name())
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		return nil, err
	}
	f := pm.f
	f.mu.Lock()
	f.ready, f.size, f.file = true, pm.size, read
	f.cond.Broadcast()
	f.mu.Unlock()
	pm.dst = tmp
	return tmp, nil
}

// download is run's upstream GET of d, as p planned it.
func (c *Cache) download(ctx context.Context, f *fill, rule *Rule, local, up string, d oci.Digest, p blobPlan) error {
	if p.declared {
		if err := storage.CheckFree(c.blobs, p.size, c.limits.MinFreeSpace); err != nil {
			return err
		}
	}
	rule.stats.misses.Add(1)
	body, clen, err := rule.Source.GetBlob(ctx, up, d)
	if err != nil {
		return err
	}
	defer body.Close()
	// size is what the body must hold (-1: unknown, and the readers get no Content-Length);
	// bound is the most it may hold.
	size, bound := int64(-1), c.limits.MaxFillSize
	switch {
	case p.declared && clen >= 0 && clen != p.size:
		return &Error{Kind: KindInvalid, Status: http.StatusOK,
			Message: fmt.Sprintf("Content-Length %d is not the size %d that the manifest declares", clen, p.size)}
	case p.declared:
		size, bound = p.size, p.size
	case clen >= 0:
		size, bound = clen, clen
		if err := storage.CheckFree(c.blobs, size, c.limits.MinFreeSpace); err != nil {
			return err
		}
	}
	pm := pumping{f: f, body: body, size: size, bound: bound, d: d, space: func(n int64) error {
		return storage.CheckFree(c.blobs, n, c.limits.MinFreeSpace)
	}}
	if sp, ok := c.blobs.(storage.Spooler); ok {
		if _, plain := c.blobs.(storage.FileAdopter); !plain {
			return c.runSpool(ctx, sp, &pm, local)
		}
	}
	tmp, err := c.toFile(&pm)
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name()) // a no-op once adopted
	written, err := pm.run()
	if err != nil {
		tmp.Close()
		return err
	}
	_, err = c.content.Publish(ctx, local, d, func(ctx context.Context) (int64, error) {
		var err error
		switch a, ok := c.blobs.(storage.FileAdopter); {
		case c.storedAlready(ctx, d):
			// The bytes were here for other repositories: this download proved the upstream
			// has them; the store keeps one copy.
			tmp.Close()
		case ok:
			err = a.Adopt(ctx, d, tmp)
		default:
			if _, err = tmp.Seek(0, io.SeekStart); err == nil {
				_, err = c.blobs.Put(ctx, d, tmp)
			}
			tmp.Close()
		}
		return written, err
	})
	return err
}

// storedAlready reports whether the store holds d.
func (c *Cache) storedAlready(ctx context.Context, d oci.Digest) bool {
	_, err := c.blobs.Stat(ctx, d)
	return err == nil
}

// runSpool is run for a store that must not hold plaintext in a file (encryption at rest): the
// blob goes into the store's Spool, which seals it as it is written and which the readers read
// (decrypted) as it grows. The spool is closed with the read side (closeReadSide), which
// discards it unless it was committed.
func (c *Cache) runSpool(ctx context.Context, sp storage.Spooler, pm *pumping, local string) error {
	f, d := pm.f, pm.d
	spool, err := sp.NewSpool(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	f.ready, f.size, f.spool = true, pm.size, spool
	f.cond.Broadcast()
	f.mu.Unlock()
	pm.dst = spool
	written, err := pm.run()
	if err != nil {
		return err
	}
	_, err = c.content.Publish(ctx, local, d, func(ctx context.Context) (int64, error) {
		// Bytes stored already (for other repositories) are not committed a second time: the
		// spool is discarded with the read side.
		if c.storedAlready(ctx, d) {
			return written, nil
		}
		return written, spool.Commit(ctx, d)
	})
	return err
}

// pumping is one upstream body on its way into a fill.
type pumping struct {
	f     *fill
	body  io.Reader
	dst   io.Writer
	size  int64 // what the body must hold; -1 when unknown
	bound int64 // the most it may hold
	d     oci.Digest
	space func(n int64) error // whether n more bytes may be written
	// stored: the body is the store's copy, verified when it was stored, and not hashed again
	// (as a client reading the store directly gets it).
	stored bool
}

// run copies the body to dst, announcing progress to the fill's readers, and verifies the size and
// (unless stored) the digest. It reads at most one byte past the bound, and never writes or announces that byte,
// so that no reader ever gets more than bound-1 bytes of a body that fails.
func (pm *pumping) run() (int64, error) {
	f, d := pm.f, pm.d
	h := d.Algorithm().Hash()
	if pm.stored {
		h = nil
	}
	buf := make([]byte, 256<<10)
	body := io.LimitReader(pm.body, min(pm.bound, math.MaxInt64-1)+1)
	var written, announced int64
	for {
		n, rerr := body.Read(buf)
		if written+int64(n) > pm.bound {
			return written, &Error{Kind: KindInvalid, Message: fmt.Sprintf("blob body is longer than %d bytes", pm.bound)}
		}
		if n > 0 {
			if err := pm.space(int64(n)); err != nil {
				return written, err
			}
			if _, err := pm.dst.Write(buf[:n]); err != nil {
				return written, err
			}
			if h != nil {
				h.Write(buf[:n])
			}
			written += int64(n)
			f.mu.Lock()
			f.written = written
			if written-announced >= wakeStep {
				// Readers wake per step, not per upstream read (64 KiB on a slow link).
				f.cond.Broadcast()
				announced = written
			}
			f.mu.Unlock()
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			if KindOf(rerr) != "" {
				return written, rerr
			}
			return written, &Error{Kind: KindInvalid, Message: fmt.Sprintf("blob body cut after %d bytes", written), Err: rerr}
		}
	}
	if pm.size >= 0 && written != pm.size {
		return written, &Error{Kind: KindInvalid, Message: fmt.Sprintf("blob body has %d bytes, not %d", written, pm.size)}
	}
	if h == nil {
		return written, nil
	}
	if got := digest.NewDigest(d.Algorithm(), h); got != d {
		return written, &Error{Kind: KindInvalid, Message: fmt.Sprintf("blob content is %s, not %s", got, d)}
	}
	return written, nil
}

func (c *Cache) createTemp() (*os.File, error) {
	if a, ok := c.blobs.(storage.FileAdopter); ok {
		return a.CreateTemp()
	}
	return os.CreateTemp("", "berth-fill-*")
}

// serveFill streams a fill to one client as it arrives.
func (c *Cache) serveFill(w http.ResponseWriter, r *http.Request, f *fill, d oci.Digest) error {
	f.mu.Lock()
	for !f.ready && !f.done {
		f.cond.Wait()
	}
	if f.stored {
		f.mu.Unlock()
		return c.serveLocal(w, r, d)
	}
	if f.done && f.err != nil && f.written == 0 {
		err := f.err
		f.mu.Unlock()
		return clientError(err, oci.ErrBlobUnknown)
	}
	size, file, spool := f.size, f.file, f.spool
	f.mu.Unlock()

	h := w.Header()
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Type", "application/octet-stream")
	if size >= 0 {
		h.Set("Content-Length", strconv.FormatInt(size, 10))
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return nil
	}
	// A reader of its own (a new open file description of the same file, which stays valid once
	// the file is renamed into the blob store) lets net/http send with sendfile. A spool is read
	// through ReadAt, which decrypts.
	var src io.Reader
	var ra io.ReaderAt = spool
	if file != nil {
		ra = file
		if own, err := os.Open(fmt.Sprintf("/proc/self/fd/%d", file.Fd())); err == nil {
			defer own.Close()
			src = own
		}
	}
	rc := http.NewResponseController(w)
	var sent int64
	for {
		f.mu.Lock()
		// Until the fill is verified, its last byte waits, and so does anything past the size
		// the client was told (a body longer than that fails).
		unverified := func() int64 {
			if size >= 0 {
				return min(f.written, size) - 1
			}
			return f.written - 1
		}
		for !f.done && unverified() <= sent {
			f.cond.Wait()
		}
		avail := unverified()
		complete := f.done && f.err == nil
		if complete {
			avail = f.written
		}
		failed := f.done && f.err != nil
		f.mu.Unlock()
		if avail > sent {
			var n int64
			var err error
			if src != nil {
				n, err = io.CopyN(w, src, avail-sent)
			} else {
				n, err = io.Copy(w, io.NewSectionReader(ra, sent, avail-sent))
			}
			sent += n
			if err != nil {
				return nil // the client went away; the fill goes on for the others
			}
			rc.Flush()
		}
		if failed {
			// Abort the response: the client sees a cut body, never a complete wrong one.
			panic(http.ErrAbortHandler)
		}
		if complete && sent == avail {
			return nil
		}
	}
}
