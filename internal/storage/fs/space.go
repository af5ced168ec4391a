package fs

import (
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/berth/berth/internal/storage"
)

var (
	_ storage.FreeSpacer  = (*Store)(nil)
	_ storage.TempRemover = (*Store)(nil)
)

// FreeSpace implements storage.FreeSpacer.
func (s *Store) FreeSpace() (int64, error) { return freeSpace(s.root) }

// freeSpace is what an unprivileged writer may still use on root's filesystem (statfs f_bavail:
// the blocks reserved for root do not count, as df shows them).
func freeSpace(root string) (int64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(filepath.Join(root, "blobs"), &st); err != nil {
		return 0, err
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// RemoveTemps implements storage.TempRemover.
func (s *Store) RemoveTemps() (int, error) { return removeTemps(s.root) }

// removeTemps deletes uploads/put-*: the temporary files of monolithic pushes (Put), of fills
// (CreateTemp) and of spools, none of which outlives its process. Upload sessions
// (uploads/<id>/) survive restarts and stay.
func removeTemps(root string) (int, error) {
	dir := filepath.Join(root, "uploads")
	entries, err := os.ReadDir(dir)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		if e.Type().IsRegular() && strings.HasPrefix(e.Name(), "put-") {
			if err := os.Remove(filepath.Join(dir, e.Name())); err != nil && !os.IsNotExist(err) {
				return n, err
			}
			n++
		}
	}
	return n, nil
}
