package fs

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// spoolRecent is how many sealed segments a spool keeps decrypted in memory for its readers.
const spoolRecent = 8

// encSpool is a storage.Spool of an EncryptedStore: a temporary file (uploads/put-*, which
// PurgeUploads removes after a crash) in the sealed format. Full segments are sealed and written
// as they fill; the segment being filled stays in memory, so plaintext never reaches the disk.
// Readers get the bytes of the segment being filled and of the last few sealed segments from
// memory (readers of a fill follow its head, so they decrypt nothing), older ones from the file.
type encSpool struct {
	root string
	f    *os.File
	c    *segCipher

	mu        sync.Mutex
	idx       int64  // the segment being filled
	pt        []byte // its plaintext
	size      int64  // bytes written
	recent    [spoolRecent]recentSeg
	next      int    // the recent entry to replace next
	sealed    []byte // the writer's sealing buffer
	committed bool
	closed    bool
}

type recentSeg struct {
	idx int64 // -1: empty
	pt  []byte
}

// NewSpool implements storage.Spooler.
func (s *EncryptedStore) NewSpool(_ context.Context) (storage.Spool, error) {
	f, err := os.CreateTemp(filepath.Join(s.root, "uploads"), "put-*")
	if err != nil {
		return nil, err
	}
	hdr, c, err := newHeader(s.keys)
	if err == nil {
		_, err = f.WriteAt(hdr, 0)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, err
	}
	sp := &encSpool{root: s.root, f: f, c: c, pt: make([]byte, 0, c.seg), sealed: make([]byte, 0, c.raw())}
	for i := range sp.recent {
		sp.recent[i] = recentSeg{idx: -1, pt: make([]byte, 0, c.seg)}
	}
	return sp, nil
}

// Write implements storage.Spool.
func (sp *encSpool) Write(p []byte) (int, error) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.committed || sp.closed {
		return 0, errors.New("spool: write after commit or close")
	}
	n := 0
	for len(p) > 0 {
		if len(sp.pt) == sp.c.seg {
			// More bytes: the full segment is not the final one.
			sp.sealed = sp.c.seal(sp.sealed[:0], sp.pt, sp.idx, false, "")
			if _, err := sp.f.WriteAt(sp.sealed, sp.c.segOffset(sp.idx)); err != nil {
				return n, err
			}
			r := &sp.recent[sp.next]
			sp.next = (sp.next + 1) % spoolRecent
			r.idx, r.pt, sp.pt = sp.idx, sp.pt, r.pt[:0]
			sp.idx++
		}
		k := copy(sp.pt[len(sp.pt):sp.c.seg], p)
		sp.pt = sp.pt[:len(sp.pt)+k]
		p = p[k:]
		n += k
		sp.size += int64(k)
	}
	return n, nil
}

// ReadAt implements storage.Spool.
func (sp *encSpool) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	seg := int64(sp.c.seg)
	for len(p) > 0 {
		sp.mu.Lock()
		if sp.closed {
			sp.mu.Unlock()
			return n, os.ErrClosed
		}
		if off >= sp.size {
			sp.mu.Unlock()
			return n, io.EOF
		}
		i, o := off/seg, int(off%seg)
		k := -1
		if i == sp.idx {
			k = copy(p, sp.pt[o:])
		} else {
			for _, r := range sp.recent {
				if r.idx == i {
					k = copy(p, r.pt[o:])
					break
				}
			}
		}
		sp.mu.Unlock()
		if k < 0 {
			var err error
			if k, err = sp.readSealed(p, i, o); err != nil {
				return n, err
			}
		}
		p, off, n = p[k:], off+int64(k), n+k
	}
	return n, nil
}

// readSealed reads bytes of the full segment i, from offset o in it, from the file.
func (sp *encSpool) readSealed(p []byte, i int64, o int) (int, error) {
	bp := batchPool.Get().(*[]byte)
	defer batchPool.Put(bp)
	raw := (*bp)[:sp.c.raw()]
	if _, err := sp.f.ReadAt(raw, sp.c.segOffset(i)); err != nil {
		return 0, err
	}
	pt, err := sp.c.open(raw, i, false, "")
	if err != nil {
		return 0, err
	}
	k := copy(p, pt[o:])
	sp.mu.Lock()
	if !sp.closed { // keep it for the next reader
		r := &sp.recent[sp.next]
		sp.next = (sp.next + 1) % spoolRecent
		r.idx, r.pt = i, append(r.pt[:0], pt...)
	}
	sp.mu.Unlock()
	return k, nil
}

// Commit implements storage.Spool: the final segment, bound to d, then fsync and rename.
func (sp *encSpool) Commit(_ context.Context, d oci.Digest) error {
	if err := validDigest(d); err != nil {
		return err
	}
	sp.mu.Lock()
	if sp.committed || sp.closed {
		sp.mu.Unlock()
		return errors.New("spool: committed or closed")
	}
	sp.sealed = sp.c.seal(sp.sealed[:0], sp.pt, sp.idx, true, d)
	_, err := sp.f.WriteAt(sp.sealed, sp.c.segOffset(sp.idx))
	sp.committed = err == nil
	sp.mu.Unlock()
	if err != nil {
		return err
	}
	if err := sp.f.Sync(); err != nil {
		return err
	}
	return install(sp.root, sp.f.Name(), d)
}

// Close implements storage.Spool.
func (sp *encSpool) Close() error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.closed {
		return nil
	}
	sp.closed = true
	err := sp.f.Close()
	// Committed, it was renamed (or the blob was there already, and this copy goes).
	os.Remove(sp.f.Name())
	clear(sp.pt[:cap(sp.pt)])
	for i := range sp.recent {
		clear(sp.recent[i].pt[:cap(sp.recent[i].pt)])
	}
	return err
}
