package sealed

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/storage"
)

// Data directories encrypted by berth before this layer ("berth encrypted blobs v1", recorded in
// <data>/encryption.json) kept each blob's wrapped data key in a 4 KiB header of the blob file
// itself, with the segments after it. ConvertV1 turns such a directory into sealed storage, once,
// at start: every blob is re-sealed (decrypted with its old data key, sealed under a new one, its
// key record written, then renamed over the old file), so that rotation afterwards rewrites
// records only and one reader reads every blob.
//
// It is crash-safe and resumable: encryption.json goes last, so a start after a crash converts
// again; a blob file is either the old one or the new one (rename), and a converted one (its
// magic says so) is skipped; a crash leaves at most a temporary file (uploads/put-*, removed at
// start like any other) and a key record that names no blob. Upload sessions in progress in the
// old format are discarded (their clients start them again).

const (
	v1Marker   = "encryption.json"
	v1Format   = "berth encrypted blobs v1"
	v1Magic    = "BERTHENC"
	v1Header   = 4096
	v1FixedLen = 32
	v1SlotSize = 1536
	v1SumOff   = v1SlotSize - sha256.Size
	v1Wrapped  = 8 + 1 + 255
)

var v1Slots = [2]int{1024, 2560}

// v1Canary is the canary of encryption.json, sealed with another additional data than v2's.
func v1CanaryAAD(key string) []byte { return []byte("encryption.json canary\x00" + key) }

// v1Key reads a v1 blob header and unwraps its data key; it returns the blob's cipher, whose
// segments carry v1's additional data (no size in the final one).
func v1Key(hdr []byte, keys Keys) (*segCipher, error) {
	if len(hdr) < v1Header || string(hdr[:8]) != v1Magic {
		return nil, fmt.Errorf("%w: not a v1 encrypted file", ErrCorrupt)
	}
	if sum := sha256.Sum256(hdr[:v1FixedLen]); !bytes.Equal(sum[:], hdr[v1FixedLen:v1FixedLen+sha256.Size]) {
		return nil, fmt.Errorf("%w: v1 header checksum", ErrCorrupt)
	}
	if v := binary.BigEndian.Uint16(hdr[8:]); v != 1 || binary.BigEndian.Uint32(hdr[12:]) != SegmentSize {
		return nil, fmt.Errorf("%w: v1 header of version %d", ErrCorrupt, v)
	}
	var fileID [16]byte
	copy(fileID[:], hdr[16:32])
	best, bestSeq := wrappedKey{}, uint64(0)
	for _, off := range v1Slots {
		s := hdr[off : off+v1SlotSize]
		sum := sha256.New()
		sum.Write(hdr[:v1FixedLen])
		sum.Write(s[:v1SumOff])
		if !bytes.Equal(sum.Sum(nil), s[v1SumOff:]) {
			continue // empty, or torn by a crash during a rotation
		}
		seq, idLen, wl := binary.BigEndian.Uint64(s), int(s[8]), int(binary.BigEndian.Uint16(s[v1Wrapped:]))
		if seq == 0 || idLen == 0 || wl > v1SumOff-v1Wrapped-2 || seq <= bestSeq {
			continue
		}
		best, bestSeq = wrappedKey{Key: string(s[9 : 9+idLen]), Wrapped: bytes.Clone(s[v1Wrapped+2 : v1Wrapped+2+wl])}, seq
	}
	if bestSeq == 0 {
		return nil, fmt.Errorf("%w: no valid key slot", ErrCorrupt)
	}
	return best.cipher(keys, fileID)
}

// v1Open opens segment idx of a v1 blob: its additional data has no size in the final segment.
func v1Open(c *segCipher, dst, raw []byte, idx int64, final bool, d oci.Digest) ([]byte, error) {
	a := append(c.fileID[:], binary.BigEndian.AppendUint64(nil, uint64(idx))...)
	if final {
		a = append(append(a, 1), d...)
	} else {
		a = append(a, 0)
	}
	if len(raw) < overhead {
		return nil, fmt.Errorf("segment %d: %w", idx, ErrCorrupt)
	}
	pt, err := c.aead.Open(dst, raw[:nonceSize], raw[nonceSize:], a)
	if err != nil {
		return nil, fmt.Errorf("segment %d: %w", idx, ErrCorrupt)
	}
	return pt, nil
}

// ConvertV1 converts the v1 encrypted data directory dir, whose blobs b stores, to sealed
// storage (see above), and returns how many blobs it converted; it does nothing (0, nil) to a
// directory without encryption.json. keys must hold every key encryption.json lists. progress,
// if not nil, is called after each blob; an error it returns stops the conversion.
func ConvertV1(ctx context.Context, dir string, b Backend, keys Keys, progress func(done int) error) (int, error) {
	raw, err := os.ReadFile(filepath.Join(dir, v1Marker))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var m1 marker
	if err := json.Unmarshal(raw, &m1); err != nil || m1.Format != v1Format || len(m1.Keys) == 0 {
		return 0, fmt.Errorf("%s: not a berth encryption record (format %q): %v", filepath.Join(dir, v1Marker), m1.Format, err)
	}
	if err := checkKeysWith(&m1, keys, v1CanaryAAD); err != nil {
		return 0, err
	}
	if _, _, err := readMarker(ctx, b); errors.Is(err, storage.ErrNotFound) {
		c, err := newCanary(keys)
		if err != nil {
			return 0, err
		}
		m := marker{Format: markerFormat, Keys: primaryFirst(m1.Keys, keys.PrimaryID()), Canary: c}
		if _, err := putJSON(ctx, b, markerKey, &m, ""); err != nil {
			return 0, err
		}
	} else if err != nil {
		return 0, err
	}
	n := 0
	err = filepath.WalkDir(filepath.Join(dir, "blobs"), func(path string, e fs.DirEntry, err error) error {
		if err != nil || !e.Type().IsRegular() {
			return err
		}
		rel, _ := filepath.Rel(filepath.Join(dir, "blobs"), path)
		parts := strings.Split(filepath.ToSlash(rel), "/")
		if len(parts) != 3 {
			return nil
		}
		d, err := oci.ParseDigest(parts[0] + ":" + parts[2])
		if err != nil {
			return nil
		}
		converted, err := convertV1Blob(ctx, dir, path, d, b, keys)
		if err != nil {
			return fmt.Errorf("converting blob %s: %w", d, err)
		}
		if converted {
			n++
			if progress != nil {
				return progress(n)
			}
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	// Upload sessions in the old format: discarded.
	entries, _ := os.ReadDir(filepath.Join(dir, "uploads"))
	for _, e := range entries {
		data := filepath.Join(dir, "uploads", e.Name(), "data")
		if f, err := os.Open(data); err == nil {
			var magic [8]byte
			io.ReadFull(f, magic[:])
			f.Close()
			if string(magic[:]) == v1Magic {
				if err := os.RemoveAll(filepath.Join(dir, "uploads", e.Name())); err != nil {
					return n, err
				}
			}
		}
	}
	if err := os.Remove(filepath.Join(dir, v1Marker)); err != nil {
		return n, err
	}
	return n, syncDir(dir)
}

// convertV1Blob re-seals the blob file path, if it is a v1 one.
func convertV1Blob(ctx context.Context, dir, path string, d oci.Digest, b Backend, keys Keys) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	hdr := make([]byte, v1Header)
	if k, _ := io.ReadFull(f, hdr); k < 8 || string(hdr[:8]) != v1Magic {
		return false, nil // converted already
	}
	old, err := v1Key(hdr, keys)
	if err != nil {
		return false, err
	}
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	// v1 layout: every segment full but the last, which is the final one (0 to SegmentSize bytes).
	body := fi.Size() - v1Header - overhead
	if body < 0 || body%rawSegment > SegmentSize {
		return false, fmt.Errorf("%w: file of %d bytes", ErrCorrupt, fi.Size())
	}
	nseg := body/rawSegment + 1
	c, wk, err := newDataKey(keys)
	if err != nil {
		return false, err
	}
	tmp, err := os.CreateTemp(filepath.Join(dir, "uploads"), "put-convert-*")
	if err != nil {
		return false, err
	}
	defer os.Remove(tmp.Name()) // a no-op once renamed
	defer tmp.Close()
	w := io.Writer(tmp)
	if _, err := w.Write(header(c.fileID)); err != nil {
		return false, err
	}
	v := d.Verifier()
	raw := make([]byte, rawSegment)
	out := make([]byte, 0, rawSegment)
	var size int64
	for i := range nseg {
		n := rawSegment
		if i == nseg-1 {
			n = int(body%rawSegment) + overhead
		}
		if _, err := f.ReadAt(raw[:n], v1Header+i*rawSegment); err != nil {
			return false, err
		}
		pt, err := v1Open(old, nil, raw[:n], i, i == nseg-1, d)
		if err != nil {
			return false, err
		}
		v.Write(pt)
		size += int64(len(pt))
		if len(pt) > 0 {
			if _, err := w.Write(c.seal(out[:0], pt, i, nil)); err != nil {
				return false, err
			}
		}
		clear(pt)
	}
	if !v.Verified() {
		return false, fmt.Errorf("%w: its content is not %s", ErrCorrupt, d)
	}
	dataSegs := (size + SegmentSize - 1) / SegmentSize
	rec := keyRecord{wrappedKey: wk, Digest: d, Size: size}
	end := int64(headerSize)
	if size > 0 {
		rec.Runs = append(rec.Runs, run{Off: end, Len: size})
		end += rawLen(size)
	}
	rec.Runs = append(rec.Runs, run{Off: end})
	if _, err := w.Write(c.seal(out[:0], nil, dataSegs, &final{d: d, size: size})); err != nil {
		return false, err
	}
	if err := tmp.Sync(); err != nil {
		return false, err
	}
	if _, err := putJSON(ctx, b, keyRecordKey(c.fileID), rec, ""); err != nil {
		return false, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return false, err
	}
	return true, syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
