package config

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// Encryption configures encryption at rest of blobs, on either storage driver. With no KeyFile,
// blobs are stored as they are (and storage that is encrypted refuses to start).
type Encryption struct {
	// KeyFile holds the key-encryption key (`berth encryption keygen FILE` makes one): 64 hex
	// characters. It must be kept apart from the data directory.
	KeyFile string `yaml:"key_file"`
	// PreviousKeyFiles are keys that still unwrap data keys wrapped before a rotation, until
	// `berth encryption rotate` has re-wrapped them all under KeyFile.
	PreviousKeyFiles []string `yaml:"previous_key_files"`
	// MemoryCache is how many bytes of memory keep the plaintext of recently downloaded blobs,
	// so that downloading them again costs no decryption (sendfile from memory); 0 turns it off.
	// The plaintext stays off the disk (memfds), but may reach swap if the machine swaps.
	MemoryCache int64 `yaml:"memory_cache"`
}

// DefaultMemoryCache is the default of encryption.memory_cache: 512 MiB.
const DefaultMemoryCache = 512 << 20

// Enabled reports whether blobs are encrypted.
func (e Encryption) Enabled() bool { return e.KeyFile != "" }

func (e Encryption) validate(data string) error {
	var errs []error
	if e.KeyFile == "" && len(e.PreviousKeyFiles) > 0 {
		errs = append(errs, errors.New("encryption.previous_key_files: needs encryption.key_file (the key new data is encrypted with)"))
	}
	if e.MemoryCache < 0 {
		errs = append(errs, fmt.Errorf("encryption.memory_cache %d: must not be negative (0 turns the cache off)", e.MemoryCache))
	}
	seen := map[string]bool{}
	for i, f := range append([]string{e.KeyFile}, e.PreviousKeyFiles...) {
		if f == "" {
			if i > 0 {
				errs = append(errs, errors.New("encryption.previous_key_files: empty file name"))
			}
			continue
		}
		abs, err := filepath.Abs(f)
		if err != nil {
			errs = append(errs, fmt.Errorf("encryption: key file %q: %v", f, err))
			continue
		}
		if seen[abs] {
			errs = append(errs, fmt.Errorf("encryption: key file %q is given twice", f))
		}
		seen[abs] = true
		if within(abs, data) {
			errs = append(errs, fmt.Errorf("encryption: key file %q is inside the data directory %q: keep it apart, or whoever has a copy of the data has the key too", f, data))
		}
	}
	return errors.Join(errs...)
}

// within reports whether the absolute path p is in the directory dir.
func within(p, dir string) bool {
	if dir == "" {
		return false
	}
	d, err := filepath.Abs(dir)
	if err != nil {
		return false
	}
	rel, err := filepath.Rel(d, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}
