package sealed

import (
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// plainPool holds the plaintext buffers of sealers and readers.
var plainPool = sync.Pool{New: func() any { b := make([]byte, 0, maxWindow*SegmentSize); return &b }}

// sealer is an io.Reader of a run of sealed segments: it reads plaintext from src and seals it,
// segment by segment, from index idx on; every plaintext byte also goes to hashes. It never
// holds more than one segment. At src's end (io.EOF, or another error, kept in srcErr: the run
// still ends cleanly with what arrived) it seals the partial last segment and appends what end
// returns (the final segment of a Put), or fails with end's error, so that the store below never
// publishes what end refuses.
type sealer struct {
	src    io.Reader
	c      *segCipher
	idx    int64
	hashes []io.Writer
	end    func(s *sealer) ([]byte, error)

	n      int64 // plaintext bytes sealed
	srcErr error
	pt     []byte
	ptp    *[]byte
	out    []byte // sealed bytes not yet read
	buf    []byte // the storage of out
	done   bool
}

func newSealer(src io.Reader, c *segCipher, idx int64, prefix []byte, end func(*sealer) ([]byte, error), hashes ...io.Writer) *sealer {
	ptp := plainPool.Get().(*[]byte)
	s := &sealer{src: src, c: c, idx: idx, hashes: hashes, end: end, ptp: ptp, pt: (*ptp)[:SegmentSize]}
	s.buf = make([]byte, 0, len(prefix)+rawSegment)
	s.out = append(s.buf, prefix...)
	return s
}

// release returns the plaintext buffer, cleared; the sealer is unusable after.
func (s *sealer) release() {
	if s.ptp != nil {
		clear((*s.ptp)[:cap(*s.ptp)])
		plainPool.Put(s.ptp)
		s.ptp, s.pt = nil, nil
	}
}

func (s *sealer) Read(p []byte) (int, error) {
	for len(s.out) == 0 {
		if s.done {
			return 0, io.EOF
		}
		if err := s.next(); err != nil {
			return 0, err
		}
	}
	k := copy(p, s.out)
	s.out = s.out[k:]
	return k, nil
}

// next seals the next segment into out, or ends the run.
func (s *sealer) next() error {
	k, err := io.ReadFull(s.src, s.pt)
	if k > 0 {
		for _, h := range s.hashes {
			h.Write(s.pt[:k])
		}
		s.out = s.c.seal(s.buf[:0], s.pt[:k], s.idx, nil)
		s.idx++
		s.n += int64(k)
	}
	if err == nil {
		return nil
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) {
		s.srcErr = err
	}
	s.done = true
	if s.end == nil {
		return nil
	}
	tail, err := s.end(s)
	if err != nil {
		return err
	}
	s.out = append(s.out, tail...)
	return nil
}

// maxWindow is how many segments a reader decrypts at once.
const maxWindow = 4

// source reads a stored blob at offsets: with ReadAt where that is cheap (a file), sequentially
// where the store streams (S3: one GET for a whole sequential read), and with ReadAt of exactly
// the bytes for small jumps when the store has it.
type source struct {
	r   io.ReadSeekCloser
	ra  io.ReaderAt // nil when r has no ReadAt
	pos int64       // r's position
}

func newSource(r io.ReadSeekCloser) *source {
	s := &source{r: r}
	s.ra, _ = r.(io.ReaderAt)
	return s
}

func (s *source) readAt(p []byte, off int64) error {
	var err error
	_, isFile := s.r.(*os.File)
	switch {
	case isFile || (s.ra != nil && off != s.pos && len(p) <= rawSegment):
		_, err = s.ra.ReadAt(p, off)
	default:
		if off != s.pos {
			if _, err := s.r.Seek(off, io.SeekStart); err != nil {
				return err
			}
			s.pos = off
		}
		var n int
		n, err = io.ReadFull(s.r, p)
		s.pos += int64(n)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: the blob is shorter than its record says", ErrCorrupt)
	}
	return err
}

// reader reads a sealed blob's plaintext (io.ReadSeekCloser), decrypting only the segments it
// reads, up to maxWindow at a time.
type reader struct {
	src  *source
	c    *segCipher
	l    *layout
	fin  final
	pos  int64
	win  []byte // plaintext from winOff
	winp *[]byte
	raw  []byte
	wOff int64
	ra   int   // segments a load decrypts: 1, doubling up to maxWindow while reads are sequential
	next int64 // the segment after the last load's
}

func newReader(src *source, c *segCipher, l *layout, fin final) (*reader, error) {
	r := &reader{src: src, c: c, l: l, fin: fin, ra: 1, next: -1}
	// The final segment first: it proves the size and the digest.
	idx, off := l.finalSegment()
	raw := make([]byte, overhead)
	if err := src.readAt(raw, off); err != nil {
		return nil, err
	}
	if _, err := c.open(nil, raw, idx, &fin); err != nil {
		return nil, err
	}
	r.winp = plainPool.Get().(*[]byte)
	return r, nil
}

func (r *reader) Read(p []byte) (int, error) {
	if r.winp == nil {
		return 0, os.ErrClosed
	}
	if r.pos >= r.l.size {
		return 0, io.EOF
	}
	if r.pos < r.wOff || r.pos >= r.wOff+int64(len(r.win)) {
		if err := r.load(r.pos); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.win[r.pos-r.wOff:])
	r.pos += int64(n)
	return n, nil
}

// load decrypts the segments from the one that holds off, up to maxWindow of its run.
func (r *reader) load(off int64) error {
	r.win = r.win[:0]
	idx, rawOff, ptOff, n := r.l.locate(off)
	// The segments of the same run that follow, as many as the read-ahead says: all full but maybe
	// the run's last. (Only as many: a range must not fail for damage after it.)
	if idx == r.next {
		r.ra = min(2*r.ra, maxWindow)
	} else {
		r.ra = 1
	}
	lens := []int{n}
	for len(lens) < r.ra && n == SegmentSize {
		next := ptOff + int64(len(lens))*SegmentSize
		if next >= r.l.size {
			break
		}
		i2, o2, _, n2 := r.l.locate(next)
		if i2 != idx+int64(len(lens)) || o2 != rawOff+int64(len(lens))*rawSegment {
			break // another run
		}
		lens = append(lens, n2)
		n = n2
	}
	total := 0
	for _, k := range lens {
		total += k + overhead
	}
	if cap(r.raw) < total {
		r.raw = make([]byte, 0, maxWindow*rawSegment)
	}
	raw := r.raw[:total]
	if err := r.src.readAt(raw, rawOff); err != nil {
		return err
	}
	pt := (*r.winp)[:0]
	for i, k := range lens {
		var err error
		if pt, err = r.c.open(pt, raw[:k+overhead], idx+int64(i), nil); err != nil {
			return err
		}
		raw = raw[k+overhead:]
	}
	r.win, r.wOff = pt, ptOff
	r.next = idx + int64(len(lens))
	return nil
}

func (r *reader) Seek(offset int64, whence int) (int64, error) {
	switch whence {
	case io.SeekStart:
	case io.SeekCurrent:
		offset += r.pos
	case io.SeekEnd:
		offset += r.l.size
	default:
		return 0, errors.New("seek: invalid whence")
	}
	if offset < 0 {
		return 0, errors.New("seek: negative position")
	}
	r.pos = offset
	return offset, nil
}

func (r *reader) Close() error {
	if r.winp == nil {
		return os.ErrClosed
	}
	clear((*r.winp)[:cap(*r.winp)])
	plainPool.Put(r.winp)
	r.winp, r.win = nil, nil
	return r.src.r.Close()
}
