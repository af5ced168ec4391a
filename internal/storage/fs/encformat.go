package fs

// The encrypted file format, shared by blobs, upload sessions (uploads/<id>/data) and the
// temporary files of Put and of pull-through fills:
//
//	header, 4096 bytes:
//	  [0, 64)       fixed part, written once when the file is created and never again:
//	                "BERTHENC" | version u16 (1) | reserved u16 | segment size u32 | file id (16 random
//	                bytes) | SHA-256 of the 32 bytes before
//	  [1024, 2560)  key slot A
//	  [2560, 4096)  key slot B
//	  each slot:    sequence u64 | len(kek id) u8 | kek id (<= 255) | len(wrapped) u16 |
//	                wrapped data key (<= 1238) | ... | SHA-256 of the fixed part's first 32 bytes and
//	                the slot's first 1504 bytes, in its last 32 bytes
//	segments, from offset 4096: nonce (12 random bytes) | AES-256-GCM ciphertext | tag (16)
//
// Every segment but the last holds exactly segment-size plaintext bytes (64 KiB); the last holds 0
// to segment-size bytes and there is always one, so an empty blob is one empty segment. The
// plaintext size follows from the file size, so Stat needs no read. Each segment's additional
// data is the file id, its index and whether it is the final segment; the final segment's also
// holds the blob's digest. So segments cannot be reordered, moved into another file, dropped from
// the end (the new last one is not sealed as final) or extended, and a whole file cannot be put in
// place of another blob's. Upload sessions seal no final segment until Commit, which knows the digest.
//
// Each file has its own random data key (DEK) and file id; only the DEK wrapped by a KEK
// (Keys) is stored, in a key slot. The active slot is the valid one (checksum) with the higher
// sequence number. Rotation re-wraps the DEK under another KEK without touching a segment: it
// writes the inactive slot with the next sequence number and fsyncs. A crash before that write is
// durable leaves the old slot active (the new one is either not there or fails its checksum) and
// the old key still listed in encryption.json, so the rotation just runs again; a crash after it
// leaves the new slot active. The slots are 512-byte aligned and apart from the fixed part, so a
// slot write never rewrites the bytes of the other slot or of the fixed part (the "powersafe
// overwrite" property of modern disks that SQLite also relies on).

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/berth/berth/internal/oci"
)

const (
	hdrSize     = 4096
	fixedLen    = 32 // the fixed part's fields, then their checksum
	slotA       = 1024
	slotB       = 2560
	slotSize    = 1536
	slotSumOff  = slotSize - sha256.Size
	maxKeyID    = 255
	wrappedOff  = 8 + 1 + maxKeyID
	maxWrapped  = slotSumOff - wrappedOff - 2
	nonceSize   = 12
	tagSize     = 16
	segOverhead = nonceSize + tagSize
	fileMagic   = "BERTHENC"
	fileVersion = 1
	// segmentSize is the plaintext size of a segment in files this version writes; a file's header
	// says what it was written with.
	segmentSize = 64 << 10
	dekSize     = 32
)

var slotOffsets = [2]int{slotA, slotB}

// ErrCorrupt reports an encrypted file that does not decrypt: altered, truncated, put in
// another blob's place, or sealed under other keys.
var ErrCorrupt = errors.New("encrypted blob does not verify (altered, truncated or misplaced)")

// Keys wraps and unwraps the data keys of an encrypted store; *crypt.Keyring implements it.
type Keys interface {
	// PrimaryID is the ID of the key that wraps new data keys.
	PrimaryID() string
	// Has reports whether the key id is available to unwrap.
	Has(id string) bool
	// WrapDEK wraps a data key with the primary key and returns that key's ID.
	WrapDEK(dek []byte) (id string, wrapped []byte, err error)
	// UnwrapDEK unwraps a data key that the key id wrapped.
	UnwrapDEK(id string, wrapped []byte) ([]byte, error)
}

// segCipher seals and opens the segments of one file.
type segCipher struct {
	aead   cipher.AEAD
	fileID [16]byte
	seg    int // plaintext bytes per segment
}

func newSegCipher(dek []byte, fileID [16]byte, seg int) (*segCipher, error) {
	block, err := aes.NewCipher(dek)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	return &segCipher{aead: aead, fileID: fileID, seg: seg}, nil
}

// raw is the size of a full segment on disk.
func (c *segCipher) raw() int { return c.seg + segOverhead }

// segOffset is where segment idx starts in the file.
func (c *segCipher) segOffset(idx int64) int64 { return hdrSize + idx*int64(c.raw()) }

// aad is a segment's additional data: file id, index, final flag, and for the final segment the
// blob's digest.
func (c *segCipher) aad(buf *[160]byte, idx int64, final bool, d oci.Digest) []byte {
	a := append(buf[:0], c.fileID[:]...)
	a = binary.BigEndian.AppendUint64(a, uint64(idx))
	if final {
		a = append(a, 1)
		a = append(a, d...)
	} else {
		a = append(a, 0)
	}
	return a
}

// seal appends segment idx, sealing pt, to dst.
func (c *segCipher) seal(dst, pt []byte, idx int64, final bool, d oci.Digest) []byte {
	var ab [160]byte
	n := len(dst)
	dst = append(dst, make([]byte, nonceSize)...)
	if _, err := rand.Read(dst[n:]); err != nil {
		panic(err) // crypto/rand never fails on Linux
	}
	return c.aead.Seal(dst, dst[n:n+nonceSize], pt, c.aad(&ab, idx, final, d))
}

// open decrypts segment idx (raw: nonce, ciphertext, tag) in place and returns the plaintext,
// which is raw[nonceSize:len(raw)-tagSize].
func (c *segCipher) open(raw []byte, idx int64, final bool, d oci.Digest) ([]byte, error) {
	if len(raw) < segOverhead {
		return nil, ErrCorrupt
	}
	var ab [160]byte
	ct := raw[nonceSize:]
	pt, err := c.aead.Open(ct[:0], raw[:nonceSize], ct, c.aad(&ab, idx, final, d))
	if err != nil {
		return nil, fmt.Errorf("segment %d: %w", idx, ErrCorrupt)
	}
	return pt, nil
}

// layout derives a sealed blob's segments from its file size: how many, the plaintext bytes of
// the last one, and the plaintext size.
func layout(fileSize int64, seg int) (nseg int64, last int, size int64, err error) {
	d := fileSize - hdrSize - segOverhead
	if d < 0 {
		return 0, 0, 0, fmt.Errorf("%w: file of %d bytes", ErrCorrupt, fileSize)
	}
	raw := int64(seg + segOverhead)
	full, rem := d/raw, d%raw
	if rem > int64(seg) {
		return 0, 0, 0, fmt.Errorf("%w: file of %d bytes", ErrCorrupt, fileSize)
	}
	return full + 1, int(rem), full*int64(seg) + rem, nil
}

// slot is a parsed key slot.
type slot struct {
	ok      bool
	seq     uint64
	keyID   string
	wrapped []byte
}

// header is a parsed file header.
type header struct {
	seg    int
	fileID [16]byte
	slots  [2]slot
	fixed  []byte // the fixed part's fields, bound into each slot's checksum
}

// active is the index of the active slot, or -1.
func (h *header) active() int {
	a, b := h.slots[0], h.slots[1]
	switch {
	case a.ok && (!b.ok || a.seq > b.seq):
		return 0
	case b.ok:
		return 1
	}
	return -1
}

// newHeader makes the header of a new file: a new data key wrapped by the primary key in slot A.
func newHeader(keys Keys) ([]byte, *segCipher, error) {
	dek := make([]byte, dekSize)
	var fileID [16]byte
	if _, err := rand.Read(dek); err != nil {
		return nil, nil, err
	}
	if _, err := rand.Read(fileID[:]); err != nil {
		return nil, nil, err
	}
	id, wrapped, err := keys.WrapDEK(dek)
	if err != nil {
		return nil, nil, fmt.Errorf("wrapping a data key: %w", err)
	}
	buf := make([]byte, hdrSize)
	copy(buf, fileMagic)
	binary.BigEndian.PutUint16(buf[8:], fileVersion)
	binary.BigEndian.PutUint32(buf[12:], segmentSize)
	copy(buf[16:32], fileID[:])
	sum := sha256.Sum256(buf[:fixedLen])
	copy(buf[fixedLen:], sum[:])
	if err := encodeSlot(buf[slotA:slotA+slotSize], buf[:fixedLen], 1, id, wrapped); err != nil {
		return nil, nil, err
	}
	c, err := newSegCipher(dek, fileID, segmentSize)
	return buf, c, err
}

func encodeSlot(dst, fixed []byte, seq uint64, id string, wrapped []byte) error {
	if len(id) == 0 || len(id) > maxKeyID {
		return fmt.Errorf("key id %q: want 1 to %d bytes", id, maxKeyID)
	}
	if len(wrapped) > maxWrapped {
		return fmt.Errorf("wrapped data key of %d bytes: at most %d fit a key slot", len(wrapped), maxWrapped)
	}
	clear(dst)
	binary.BigEndian.PutUint64(dst, seq)
	dst[8] = byte(len(id))
	copy(dst[9:], id)
	binary.BigEndian.PutUint16(dst[wrappedOff:], uint16(len(wrapped)))
	copy(dst[wrappedOff+2:], wrapped)
	h := sha256.New()
	h.Write(fixed)
	h.Write(dst[:slotSumOff])
	h.Sum(dst[slotSumOff:slotSumOff])
	return nil
}

// parseHeader parses and checks a header (the first hdrSize bytes of a file).
func parseHeader(buf []byte) (*header, error) {
	if len(buf) < hdrSize || string(buf[:8]) != fileMagic {
		return nil, fmt.Errorf("%w: not an encrypted file", ErrCorrupt)
	}
	if sum := sha256.Sum256(buf[:fixedLen]); !bytes.Equal(sum[:], buf[fixedLen:fixedLen+sha256.Size]) {
		return nil, fmt.Errorf("%w: header checksum", ErrCorrupt)
	}
	if v := binary.BigEndian.Uint16(buf[8:]); v != fileVersion {
		return nil, fmt.Errorf("encrypted file format version %d: this berth reads version %d", v, fileVersion)
	}
	h := &header{seg: int(binary.BigEndian.Uint32(buf[12:])), fixed: buf[:fixedLen]}
	if h.seg != segmentSize { // Stat derives sizes from it
		return nil, fmt.Errorf("%w: segment size %d, not %d", ErrCorrupt, h.seg, segmentSize)
	}
	copy(h.fileID[:], buf[16:32])
	for i, off := range slotOffsets {
		s := buf[off : off+slotSize]
		sum := sha256.New()
		sum.Write(h.fixed)
		sum.Write(s[:slotSumOff])
		if !bytes.Equal(sum.Sum(nil), s[slotSumOff:]) {
			continue // empty, or torn by a crash during a rotation
		}
		idLen := int(s[8])
		wl := int(binary.BigEndian.Uint16(s[wrappedOff:]))
		seq := binary.BigEndian.Uint64(s)
		if seq == 0 || idLen == 0 || wl > maxWrapped {
			continue
		}
		h.slots[i] = slot{ok: true, seq: seq, keyID: string(s[9 : 9+idLen]), wrapped: bytes.Clone(s[wrappedOff+2 : wrappedOff+2+wl])}
	}
	if h.active() < 0 {
		return nil, fmt.Errorf("%w: no valid key slot", ErrCorrupt)
	}
	return h, nil
}

// readHeader reads and parses a file's header.
func readHeader(r io.ReaderAt) (*header, error) {
	buf := make([]byte, hdrSize)
	if _, err := r.ReadAt(buf, 0); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%w: header truncated", ErrCorrupt)
		}
		return nil, err
	}
	return parseHeader(buf)
}

// dekCipher unwraps the data key of the active slot.
func (h *header) dekCipher(keys Keys) (*segCipher, error) {
	s := h.slots[h.active()]
	if !keys.Has(s.keyID) {
		return nil, fmt.Errorf("data key wrapped by key %s, which is not configured (encryption.key_file or previous_key_files)", s.keyID)
	}
	dek, err := keys.UnwrapDEK(s.keyID, s.wrapped)
	if err != nil {
		return nil, fmt.Errorf("unwrapping the data key with key %s: %w", s.keyID, err)
	}
	return newSegCipher(dek, h.fileID, h.seg)
}

// openCipher reads a file's header and unwraps its data key.
func openCipher(r io.ReaderAt, keys Keys) (*segCipher, error) {
	h, err := readHeader(r)
	if err != nil {
		return nil, err
	}
	return h.dekCipher(keys)
}
