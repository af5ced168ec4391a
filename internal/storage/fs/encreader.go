package fs

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"

	"github.com/berth/berth/internal/oci"
)

// maxWindow is how many segments a reader decrypts at once when reading sequentially.
const maxWindow = 4

var windowPool = sync.Pool{New: func() any {
	return &window{pt: make([]byte, maxWindow*segmentSize), raw: make([]byte, maxWindow*(segmentSize+segOverhead))}
}}

// window is a run of decrypted segments, their plaintext contiguous in pt.
type window struct {
	first int64 // index of the first segment
	n     int64 // segments
	end   int64 // plaintext offset in the blob after the window
	pt    []byte
	raw   []byte // the sealed segments, as read
	err   error
	done  chan struct{} // closed when a background load ends
}

// has reports whether the window holds the plaintext byte at off.
func (w *window) has(off int64, seg int) bool {
	return w.err == nil && off >= w.first*int64(seg) && off < w.end
}

// segReader reads a sealed blob's plaintext (io.ReadSeekCloser). A read decrypts only the
// segments it touches; sequential reads grow the window to maxWindow segments and decrypt the
// next window in the background while the caller sends the current one, so that decryption and
// sending overlap on two cores. One pread per window; buffers are pooled, so nothing is allocated
// per segment. (Mapping the file instead saves the copy of pread, but costs as much in page faults
// and counts every mapped page of every open blob in the process's RSS.)
type segReader struct {
	f     *os.File
	c     *segCipher
	d     oci.Digest
	nseg  int64
	last  int // plaintext bytes of the last segment
	size  int64
	pos   int64
	cur   *window // what reads are served from
	next  *window // being loaded in the background, or nil
	spare *window
	ra    int64 // segments per window: 1, doubling while reads are sequential
}

func newSegReader(f *os.File, keys Keys, d oci.Digest) (*segReader, error) {
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	nseg, last, size, err := layout(fi.Size(), segmentSize)
	if err != nil {
		return nil, err
	}
	c, err := openCipher(f, keys)
	if err != nil {
		return nil, err
	}
	r := &segReader{f: f, c: c, d: d, nseg: nseg, last: last, size: size, ra: 1}
	// The final segment first: it proves the size and the digest.
	w := windowPool.Get().(*window)
	r.load(w, nseg-1, 1)
	if w.err != nil {
		windowPool.Put(w)
		return nil, w.err
	}
	r.cur = w
	return r, nil
}

// segLen is the plaintext size of segment i.
func (r *segReader) segLen(i int64) int {
	if i == r.nseg-1 {
		return r.last
	}
	return r.c.seg
}

// load decrypts segments [first, first+n) into w.
func (r *segReader) load(w *window, first, n int64) {
	w.first, w.n, w.err = first, n, nil
	w.end = first*int64(r.c.seg) + (n-1)*int64(r.c.seg) + int64(r.segLen(first+n-1))
	raw := r.c.raw()
	off := r.c.segOffset(first)
	total := int(n-1)*raw + r.segLen(first+n-1) + segOverhead
	src := w.raw[:total]
	if _, err := r.f.ReadAt(src, off); err != nil {
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: file shrank", ErrCorrupt)
		}
		w.err = err
		return
	}
	var ab [160]byte
	for i := range n {
		idx := first + i
		seg := src[i*int64(raw) : min(int64(total), (i+1)*int64(raw))]
		final := idx == r.nseg-1
		dst := w.pt[i*int64(r.c.seg) : i*int64(r.c.seg)]
		if _, err := r.c.aead.Open(dst, seg[:nonceSize], seg[nonceSize:], r.c.aad(&ab, idx, final, r.d)); err != nil {
			w.err = fmt.Errorf("segment %d: %w", idx, ErrCorrupt)
			return
		}
	}
}

// Read implements io.Reader.
func (r *segReader) Read(p []byte) (int, error) {
	if r.f == nil {
		return 0, os.ErrClosed
	}
	if r.pos >= r.size {
		return 0, io.EOF
	}
	if !r.cur.has(r.pos, r.c.seg) {
		if err := r.advance(r.pos / int64(r.c.seg)); err != nil {
			return 0, err
		}
	}
	start := r.cur.first * int64(r.c.seg)
	n := copy(p, r.cur.pt[r.pos-start:r.cur.end-start])
	r.pos += int64(n)
	return n, nil
}

// advance makes cur a window holding segment seg.
func (r *segReader) advance(seg int64) error {
	sequential := seg == r.cur.first+r.cur.n
	if r.next != nil {
		<-r.next.done
		w := r.next
		r.next = nil
		if w.err == nil && seg >= w.first && seg < w.first+w.n {
			r.spare, r.cur = r.cur, w
			r.prefetch()
			return nil
		}
		r.putSpare(w)
	}
	if sequential {
		r.ra = min(2*r.ra, maxWindow)
	} else {
		r.ra = 1
	}
	w := r.spare
	r.spare = nil
	if w == nil {
		w = windowPool.Get().(*window)
	}
	r.load(w, seg, min(r.ra, r.nseg-seg))
	if w.err != nil {
		err := w.err
		r.putSpare(w)
		return err
	}
	r.putSpare(r.cur)
	r.cur = w
	r.prefetch()
	return nil
}

func (r *segReader) putSpare(w *window) {
	if r.spare == nil {
		r.spare = w
	} else {
		windowPool.Put(w)
	}
}

// prefetch starts decrypting the window after cur when reads are sequential at full speed.
func (r *segReader) prefetch() {
	first := r.cur.first + r.cur.n
	if r.ra < maxWindow || first >= r.nseg || r.next != nil {
		return
	}
	w := r.spare
	r.spare = nil
	if w == nil {
		w = windowPool.Get().(*window)
	}
	w.done = make(chan struct{})
	r.next = w
	n := min(maxWindow, r.nseg-first)
	go func() {
		r.load(w, first, n)
		close(w.done)
	}()
}

// each calls fn with the whole plaintext in order, a window of segments at a time (off is where p
// starts in the blob), decrypting and verifying every segment, as sequential reads do but without
// copying. It stops at the first error, of decryption or of fn. p is valid during the call only.
func (r *segReader) each(fn func(p []byte, off int64) error) error {
	seg := int64(r.c.seg)
	for off := int64(0); off < r.size; {
		if !r.cur.has(off, r.c.seg) {
			if err := r.advance(off / seg); err != nil {
				return err
			}
		}
		start := r.cur.first * seg
		p := r.cur.pt[off-start : r.cur.end-start]
		if err := fn(p, off); err != nil {
			return err
		}
		off += int64(len(p))
	}
	return nil
}

// Seek implements io.Seeker.
func (r *segReader) Seek(offset int64, whence int) (int64, error) {
	return seek(&r.pos, r.size, offset, whence)
}

// seek moves *pos in a reader of size bytes as io.Seeker says.
func seek(pos *int64, size, offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += *pos
	case io.SeekEnd:
		offset += size
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	*pos = offset
	return offset, nil
}

// Close implements io.Closer.
func (r *segReader) Close() error {
	if r.f == nil {
		return os.ErrClosed
	}
	if r.next != nil {
		<-r.next.done
		windowPool.Put(r.next)
	}
	for _, w := range []*window{r.cur, r.spare} {
		if w != nil {
			windowPool.Put(w)
		}
	}
	r.cur, r.next, r.spare = nil, nil, nil
	err := r.f.Close()
	r.f = nil
	return err
}
