package fs

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// RotateResult is what Rotate did.
type RotateResult struct {
	Rewrapped int      // data keys re-wrapped under the primary key
	Current   int      // data keys already under it
	Removed   int      // temporary files of interrupted pushes and fills, removed
	Retired   []string // keys the directory no longer needs
}

// Rotate re-wraps every data key of the encrypted store in dir (blobs and upload sessions) under
// keys' primary key, without rewriting any blob content: one key slot per file (see encformat.go).
// keys must hold every key the directory's record lists. The caller holds the data directory's
// lock: no berth may serve it meanwhile.
//
// It is safe to interrupt and run again. It first records the primary key as the one that wraps
// new data keys, while still listing the old ones, so that whatever happens the directory asks for
// every key that may wrap one of its data keys; files already under the primary key are skipped;
// only when every file is done does the record drop the old keys, which can then be deleted.
func Rotate(dir string, keys Keys) (RotateResult, error) {
	var res RotateResult
	m, err := readMarker(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return res, fmt.Errorf("data directory %s is not encrypted (no %s)", dir, markerFile)
	}
	if err != nil {
		return res, err
	}
	if err := checkKeys(dir, m, keys); err != nil {
		return res, err
	}
	primary := keys.PrimaryID()
	want := append([]string{primary}, slices.DeleteFunc(slices.Clone(m.Keys), func(id string) bool { return id == primary })...)
	if !slices.Equal(want, m.Keys) {
		m.Keys = want
		if err := writeMarker(dir, m); err != nil {
			return res, err
		}
	}
	files, temps, err := sealedFiles(dir)
	if err != nil {
		return res, err
	}
	// Temporary files of a Put or a fill that a crash interrupted: garbage, and sealed under keys
	// about to be retired.
	for _, t := range temps {
		if err := os.Remove(t); err == nil {
			res.Removed++
		}
	}
	var errs []error
	for _, path := range files {
		changed, err := rewrap(path, keys)
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s: %w", path, err))
		case changed:
			res.Rewrapped++
		default:
			res.Current++
		}
	}
	if len(errs) > 0 {
		return res, fmt.Errorf("rotation incomplete (%s still records keys %s; fix the files below and run it again): %w",
			markerFile, strings.Join(want, ", "), errors.Join(errs...))
	}
	c, err := newCanary(keys)
	if err != nil {
		return res, err
	}
	if err := writeMarker(dir, &marker{Format: markerFormat, Keys: []string{primary}, Canary: c}); err != nil {
		return res, err
	}
	res.Retired = want[1:]
	return res, nil
}

// sealedFiles lists the sealed files of a store: blobs and upload sessions' data files; and
// the temporary files of Put and fills.
func sealedFiles(dir string) (files, temps []string, err error) {
	err = filepath.WalkDir(filepath.Join(dir, "blobs"), func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			if path == filepath.Join(dir, "blobs") && errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	entries, err := os.ReadDir(filepath.Join(dir, "uploads"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	for _, e := range entries {
		switch {
		case e.IsDir() && validID(e.Name()):
			data := filepath.Join(dir, "uploads", e.Name(), "data")
			if _, err := os.Stat(data); err == nil {
				files = append(files, data)
			}
		case strings.HasPrefix(e.Name(), "put-"):
			temps = append(temps, filepath.Join(dir, "uploads", e.Name()))
		}
	}
	return files, temps, nil
}

// rewrap writes the file's data key, wrapped by the primary key, into its inactive key slot and
// fsyncs: the slot becomes the active one only once it is whole (checksum, higher sequence).
func rewrap(path string, keys Keys) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()
	h, err := readHeader(f)
	if err != nil {
		return false, err
	}
	a := h.active()
	s := h.slots[a]
	if s.keyID == keys.PrimaryID() {
		return false, nil
	}
	if !keys.Has(s.keyID) {
		return false, fmt.Errorf("data key wrapped by key %s, which is not configured", s.keyID)
	}
	dek, err := keys.UnwrapDEK(s.keyID, s.wrapped)
	if err != nil {
		return false, err
	}
	id, wrapped, err := keys.WrapDEK(dek)
	if err != nil {
		return false, err
	}
	buf := make([]byte, slotSize)
	if err := encodeSlot(buf, h.fixed, s.seq+1, id, wrapped); err != nil {
		return false, err
	}
	if _, err := f.WriteAt(buf, int64(slotOffsets[1-a])); err != nil {
		return false, err
	}
	if err := f.Sync(); err != nil {
		return false, err
	}
	// Read it back: the new slot must be the active one and unwrap to the same key.
	h2, err := readHeader(f)
	if err != nil {
		return false, err
	}
	if s2 := h2.slots[h2.active()]; s2.keyID != id {
		return false, fmt.Errorf("the re-wrapped key slot did not become active")
	}
	return true, nil
}

// KeyUsage counts the sealed files of the store in dir (blobs and upload sessions) by the key
// that wraps their data key; files whose header does not parse count under "unreadable". It also
// returns the keys the directory's record lists (nil when it is not encrypted).
func KeyUsage(dir string) (recorded []string, byKey map[string]int, err error) {
	m, err := readMarker(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, nil, err
	}
	if m != nil {
		recorded = m.Keys
	}
	files, _, err := sealedFiles(dir)
	if err != nil {
		return recorded, nil, err
	}
	byKey = map[string]int{}
	for _, path := range files {
		id := "unreadable"
		if f, err := os.Open(path); err == nil {
			if h, err := readHeader(f); err == nil {
				id = h.slots[h.active()].keyID
			}
			f.Close()
		}
		byKey[id]++
	}
	return recorded, byKey, nil
}
