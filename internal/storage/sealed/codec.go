// Package sealed is encryption at rest as a layer over any blob store (storage.BlobStore with
// storage.Records and storage.RawPutter): envelope encryption with a random data key (DEK) per
// blob, wrapped by a key-encryption key (Keys) and kept in a small record outside the blob, so
// that changing keys rewrites records, never blobs.
//
// A sealed blob, as the store below keeps it under the digest of its plaintext:
//
//	header, 24 bytes:   "BERTHSL2" | file id (16 random bytes)
//	runs of segments:   each segment is nonce (12 random bytes) | AES-256-GCM ciphertext | tag (16)
//
// Every segment of a run holds SegmentSize plaintext bytes but its last, which holds 1 to
// SegmentSize (a run of length 0 is one empty segment). A Put writes one run; an upload writes
// one per chunk, wherever the chunk landed in the session. The blob always ends with an empty
// segment sealed as the final one. Where each run is and how long it is (the blob's "runs"), its
// plaintext size and its wrapped DEK are in the blob's key record, keys/<file id>; bytes of the
// blob between runs (a chunk that a crash or a lost race left unreferenced) are never read.
//
// Each segment's additional data is the file id, its index in the blob (counting across runs),
// and whether it is the final one; the final one's also holds the blob's digest and size. So
// segments cannot be reordered, moved into another blob, dropped (from the end: the final one
// moves; from the middle: the indices after it change) or extended, a blob cannot be put in
// place of another, and a key record that lies about runs or sizes makes reads fail, never
// return other bytes.
package sealed

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sort"

	"github.com/berth/berth/internal/oci"
)

const (
	// SegmentSize is the plaintext size of a full segment.
	SegmentSize = 64 << 10
	nonceSize   = 12
	tagSize     = 16
	overhead    = nonceSize + tagSize
	rawSegment  = SegmentSize + overhead
	dekSize     = 32
	magic       = "BERTHSL2"
	headerSize  = len(magic) + 16
)

// ErrCorrupt reports a sealed blob or upload that does not decrypt: altered, truncated, put in
// another blob's place, sealed under other keys, or described by a record that does not match it.
var ErrCorrupt = errors.New("sealed blob does not verify (altered, truncated or misplaced)")

// segCipher seals and opens the segments of one blob.
type segCipher struct {
	aead   cipher.AEAD
	fileID [16]byte
}

func newSegCipher(dek []byte, fileID [16]byte) (*segCipher, error) {
	block, err := aes.NewCipher(dek)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &segCipher{aead: aead, fileID: fileID}, nil
}

// final is what the final segment binds: the blob's digest and plaintext size.
type final struct {
	d    oci.Digest
	size int64
}

// aad is a segment's additional data: file id, index, final flag, and for the final segment the
// blob's digest and size.
func (c *segCipher) aad(buf *[192]byte, idx int64, f *final) []byte {
	a := append(buf[:0], c.fileID[:]...)
	a = binary.BigEndian.AppendUint64(a, uint64(idx))
	if f == nil {
		return append(a, 0)
	}
	a = append(a, 1)
	a = binary.BigEndian.AppendUint64(a, uint64(f.size))
	return append(a, f.d...)
}

// seal appends segment idx, sealing pt, to dst.
func (c *segCipher) seal(dst, pt []byte, idx int64, f *final) []byte {
	var ab [192]byte
	n := len(dst)
	dst = append(dst, make([]byte, nonceSize)...)
	if _, err := rand.Read(dst[n:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return c.aead.Seal(dst, dst[n:n+nonceSize], pt, c.aad(&ab, idx, f))
}

// open decrypts segment idx (raw: nonce, ciphertext, tag), appending the plaintext to dst.
func (c *segCipher) open(dst, raw []byte, idx int64, f *final) ([]byte, error) {
	if len(raw) < overhead {
		return nil, fmt.Errorf("segment %d: %w", idx, ErrCorrupt)
	}
	var ab [192]byte
	pt, err := c.aead.Open(dst, raw[:nonceSize], raw[nonceSize:], c.aad(&ab, idx, f))
	if err != nil {
		return nil, fmt.Errorf("segment %d: %w", idx, ErrCorrupt)
	}
	return pt, nil
}

// header is the first headerSize bytes of a sealed blob.
func header(fileID [16]byte) []byte {
	return append([]byte(magic), fileID[:]...)
}

// parseHeader returns the file id of a sealed blob's header.
func parseHeader(b []byte) ([16]byte, error) {
	var id [16]byte
	if len(b) < headerSize || string(b[:len(magic)]) != magic {
		return id, fmt.Errorf("%w: not a sealed blob", ErrCorrupt)
	}
	copy(id[:], b[len(magic):headerSize])
	return id, nil
}

// run is a run of segments in the stored blob: where it starts and how many plaintext bytes it
// holds.
type run struct {
	Off int64 `json:"off"`
	Len int64 `json:"len"`
}

// segments is how many segments a run of n plaintext bytes has.
func segments(n int64) int64 {
	if n == 0 {
		return 1
	}
	return (n + SegmentSize - 1) / SegmentSize
}

// rawLen is the stored size of a run of n plaintext bytes.
func rawLen(n int64) int64 { return n + segments(n)*overhead }

// layout locates the plaintext of a blob in its runs. The last run is the final, empty segment.
type layout struct {
	runs  []run
	start []int64 // plaintext offset of each run
	first []int64 // index of each run's first segment
	size  int64   // plaintext bytes
	nseg  int64   // segments, the final one included
}

// newLayout checks runs (as a key record states them) and indexes them.
func newLayout(runs []run, size int64) (*layout, error) {
	if len(runs) == 0 || runs[len(runs)-1].Len != 0 {
		return nil, fmt.Errorf("%w: the record names no final segment", ErrCorrupt)
	}
	l := &layout{runs: runs, start: make([]int64, len(runs)), first: make([]int64, len(runs))}
	end := int64(headerSize)
	for i, r := range runs {
		if r.Off < end || r.Len < 0 || (r.Len == 0 && i != len(runs)-1) {
			return nil, fmt.Errorf("%w: the record's runs overlap or are empty", ErrCorrupt)
		}
		end = r.Off + rawLen(r.Len)
		l.start[i], l.first[i] = l.size, l.nseg
		l.size += r.Len
		l.nseg += segments(r.Len)
	}
	if l.size != size {
		return nil, fmt.Errorf("%w: the record's runs hold %d bytes, not %d", ErrCorrupt, l.size, size)
	}
	return l, nil
}

// locate returns where the segment holding plaintext offset off (< size) is: its index, its
// stored offset, the plaintext offset it starts at and its plaintext length.
func (l *layout) locate(off int64) (idx, rawOff, ptOff int64, n int) {
	r := sort.Search(len(l.runs), func(i int) bool { return l.start[i] > off }) - 1
	j := (off - l.start[r]) / SegmentSize
	ptOff = l.start[r] + j*SegmentSize
	n = int(min(SegmentSize, l.runs[r].Len-j*SegmentSize))
	return l.first[r] + j, l.runs[r].Off + j*rawSegment, ptOff, n
}

// finalSegment returns the index and stored offset of the final segment.
func (l *layout) finalSegment() (idx, rawOff int64) {
	return l.nseg - 1, l.runs[len(l.runs)-1].Off
}
