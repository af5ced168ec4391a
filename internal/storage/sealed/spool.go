package sealed

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// spoolRecent is how many sealed segments a spool keeps decrypted in memory for its readers.
const spoolRecent = 8

var _ storage.Spooler = (*Store)(nil)

// spool is a storage.Spool of the sealed layer: a temporary file, on the backend's filesystem when
// it is a storage.FileAdopter (then Commit renames it into place), else in the system's temporary
// directory (then Commit stores it with PutRaw). The file holds the blob as it will be stored:
// the header, then one run of sealed segments, written as they fill; the segment being filled
// stays in memory, so plaintext never reaches a disk. Readers get the bytes of the segment being
// filled and of the last few sealed ones from memory (readers of a fill follow its head, so they
// decrypt nothing), older ones from the file.
type spool struct {
	s       *Store
	wk      wrappedKey
	f       *os.File // written
	rf      *os.File // read: stays valid when f is adopted (closed) by the backend
	adopter storage.FileAdopter
	c       *segCipher

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
func (s *Store) NewSpool(_ context.Context) (storage.Spool, error) {
	c, wk, err := newDataKey(s.keys)
	if err != nil {
		return nil, err
	}
	a, _ := s.b.(storage.FileAdopter)
	var f *os.File
	if a != nil {
		f, err = a.CreateTemp()
	} else {
		f, err = os.CreateTemp("", "berth-sealed-fill-*")
	}
	if err != nil {
		return nil, err
	}
	rf, err := os.Open(f.Name())
	if err == nil {
		_, err = f.Write(header(c.fileID))
	}
	if err != nil {
		f.Close()
		if rf != nil {
			rf.Close()
		}
		os.Remove(f.Name())
		return nil, err
	}
	sp := &spool{s: s, wk: wk, f: f, rf: rf, adopter: a, c: c, pt: make([]byte, 0, SegmentSize), sealed: make([]byte, 0, rawSegment)}
	for i := range sp.recent {
		sp.recent[i] = recentSeg{idx: -1, pt: make([]byte, 0, SegmentSize)}
	}
	return sp, nil
}

// segOffset is where segment idx is in the file.
func segOffset(idx int64) int64 { return int64(headerSize) + idx*rawSegment }

// Write implements storage.Spool.
func (sp *spool) Write(p []byte) (int, error) {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.committed || sp.closed {
		return 0, errors.New("spool: write after commit or close")
	}
	n := 0
	for len(p) > 0 {
		if len(sp.pt) == SegmentSize {
			sp.sealed = sp.c.seal(sp.sealed[:0], sp.pt, sp.idx, nil)
			if _, err := sp.f.WriteAt(sp.sealed, segOffset(sp.idx)); err != nil {
				return n, err
			}
			r := &sp.recent[sp.next]
			sp.next = (sp.next + 1) % spoolRecent
			r.idx, r.pt, sp.pt = sp.idx, sp.pt, r.pt[:0]
			sp.idx++
		}
		k := copy(sp.pt[len(sp.pt):SegmentSize], p)
		sp.pt = sp.pt[:len(sp.pt)+k]
		p = p[k:]
		n += k
		sp.size += int64(k)
	}
	return n, nil
}

// ReadAt implements storage.Spool.
func (sp *spool) ReadAt(p []byte, off int64) (int, error) {
	n := 0
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
		i, o := off/SegmentSize, int(off%SegmentSize)
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
func (sp *spool) readSealed(p []byte, i int64, o int) (int, error) {
	raw := make([]byte, rawSegment)
	if _, err := sp.rf.ReadAt(raw, segOffset(i)); err != nil {
		return 0, err
	}
	pt, err := sp.c.open(raw[nonceSize:nonceSize], raw, i, nil)
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
	clear(pt)
	return k, nil
}

// Commit implements storage.Spool: the last segment and the final one, the key record, then the
// blob.
func (sp *spool) Commit(ctx context.Context, d oci.Digest) error {
	if err := validDigest(d); err != nil {
		return err
	}
	sp.mu.Lock()
	if sp.committed || sp.closed {
		sp.mu.Unlock()
		return errors.New("spool: committed or closed")
	}
	size, idx := sp.size, sp.idx
	out := sp.sealed[:0]
	if len(sp.pt) > 0 {
		out = sp.c.seal(out, sp.pt, idx, nil)
		idx++
	}
	rec := keyRecord{wrappedKey: sp.wk, Digest: d, Size: size}
	end := int64(headerSize)
	if size > 0 {
		rec.Runs = append(rec.Runs, run{Off: end, Len: size})
		end += rawLen(size)
	}
	rec.Runs = append(rec.Runs, run{Off: end})
	out = sp.c.seal(out, nil, idx, &final{d: d, size: size})
	_, err := sp.f.WriteAt(out, segOffset(sp.idx))
	sp.committed = err == nil
	sp.mu.Unlock()
	if err != nil {
		return err
	}
	if _, err := sp.s.b.Stat(ctx, d); err == nil {
		return nil // stored already; Close discards this copy
	}
	if _, err := putJSON(ctx, sp.s.b, keyRecordKey(sp.c.fileID), rec, ""); err != nil {
		return err
	}
	if sp.adopter != nil {
		f := sp.f
		sp.f = nil
		return sp.adopter.Adopt(ctx, d, f)
	}
	_, err = sp.s.b.PutRaw(ctx, d, io.NewSectionReader(sp.rf, 0, end+overhead))
	return err
}

// Close implements storage.Spool.
func (sp *spool) Close() error {
	sp.mu.Lock()
	defer sp.mu.Unlock()
	if sp.closed {
		return nil
	}
	sp.closed = true
	var err error
	name := sp.rf.Name()
	if sp.f != nil {
		err = sp.f.Close()
	}
	sp.rf.Close()
	if sp.f != nil || sp.adopter == nil {
		os.Remove(name) // a copy that was not adopted
	}
	clear(sp.pt[:cap(sp.pt)])
	for i := range sp.recent {
		clear(sp.recent[i].pt[:cap(sp.recent[i].pt)])
	}
	return err
}
