package e2e

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// diskFullStatus is what a push that does not fit gets: 507 Insufficient Storage (RFC 4918
// section 11.5, "unable to store the representation needed to complete the request"), which says
// what happened and, unlike 503, does not invite clients to retry the same push at once (crane and
// containerd retry 500, 502, 503 and 504 on their own; a full disk stays full until someone acts).
const diskFullStatus = http.StatusInsufficientStorage

// diskFullMount mounts a tmpfs of size bytes on a new directory and returns it; it is unmounted
// when the test ends (after berth stops, if berth is started after this call).
func diskFullMount(t *testing.T, size int64) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%d,mode=0750", size), "tmpfs", dir).CombinedOutput()
	if err != nil {
		t.Skipf("cannot mount a tmpfs to fill (needs root and mount permission): %v: %s", err, bytes.TrimSpace(out))
	}
	t.Cleanup(func() {
		if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
			t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
	return dir
}

// diskFill writes a file at path until the filesystem is full, then frees keep bytes of it.
func diskFill(t *testing.T, path string, keep int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := bytes.Repeat([]byte{0xA5}, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatalf("filling %s: %v", path, err)
			}
			break
		}
	}
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(max(fi.Size()-keep, 0)); err != nil {
		t.Fatal(err)
	}
}

// diskWantFull checks that r is the clear refusal of a full disk: 507, an OCI error document whose
// code and message say so.
func diskWantFull(t *testing.T, what string, r authResp) {
	t.Helper()
	if r.Status != diskFullStatus || r.errorCode() != "INSUFFICIENT_STORAGE" || !strings.Contains(string(r.Body), "disk is full") {
		t.Fatalf("%s on a full disk: %s, want %d INSUFFICIENT_STORAGE saying the disk is full", what, r, diskFullStatus)
	}
}

// diskLeftovers lists the files in DATA/uploads that are not upload sessions (directories): the
// temporary files of monolithic pushes, which a failed push must not leave behind.
func diskLeftovers(t *testing.T, data string) []string {
	t.Helper()
	ents, err := os.ReadDir(filepath.Join(data, "uploads"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		if !e.IsDir() {
			out = append(out, e.Name())
		}
	}
	return out
}

// TestDiskFull: berth on a data directory that fills up (a 48 MiB tmpfs), unencrypted and
// encrypted. Pushes that do not fit (a monolithic blob, a chunk of an upload session, crane's push
// of an image) are refused with 507 INSUFFICIENT_STORAGE and a message that says the disk is full,
// and leave nothing behind (no temporary file, no blob); manifests get a clear 507 or go in whole;
// everything pushed before still pulls and verifies, while the disk is full too; once space is
// freed, the same pushes work.
func TestDiskFull(t *testing.T) {
	crane := tool(t, "crane")
	for _, enc := range []bool{false, true} {
		name := "plain"
		if enc {
			name = "encrypted"
		}
		t.Run(name, func(t *testing.T) { diskFullCase(t, crane, enc) })
	}
}

func diskFullCase(t *testing.T, crane string, encrypted bool) {
	data := diskFullMount(t, 48<<20)
	// No floor: this is what a full disk does (TestPushFreeSpaceFloor: what the floor does).
	noFloor := filepath.Join(t.TempDir(), "berth.yaml")
	clWriteFile(t, noFloor, []byte("min_free_space: 0\n"))
	args := []string{"--config", noFloor}
	if encrypted {
		key := filepath.Join(t.TempDir(), "kek") // off the tmpfs: filling it must not touch the key
		if out, err := exec.Command(berthBin, "encryption", "keygen", key).CombinedOutput(); err != nil {
			t.Fatalf("berth encryption keygen: %v\n%s", err, out)
		}
		args = append(args, "--encryption-key-file", key)
	}
	b := &berth{t: t, Data: data}
	b.start(args...)
	t.Cleanup(b.Stop)

	// Before: three images and a blob pushed in chunks.
	var before []authImage
	for i := range 3 {
		before = append(before, authPushImage(t, b, "", "full/app", fmt.Sprintf("v%d", i), strings.Repeat(fmt.Sprintf("layer %d;", i), 100_000)))
	}
	chunked := encPattern(1<<20 + 333)
	chunkedDigest := diskChunkedPush(t, b, "full/chunked", chunked, 3)
	checkBefore := func(when string) {
		t.Helper()
		for i, img := range before {
			authWantManifest(t, b, "", "full/app", fmt.Sprintf("v%d", i), img.Manifest)
			authWantManifest(t, b, "", "full/app", img.Manifest, img.Manifest)
			for _, d := range []string{img.Config, img.Layer} {
				if r := authDo(t, http.MethodGet, b.URL()+"/v2/full/app/blobs/"+d, "", nil); r.Status != http.StatusOK || clDigest(r.Body) != d {
					t.Fatalf("%s: GET blob %s of v%d: %d, %d bytes hashing to %s", when, d, i, r.Status, len(r.Body), clDigest(r.Body))
				}
			}
		}
		if r := authDo(t, http.MethodGet, b.URL()+"/v2/full/chunked/blobs/"+chunkedDigest, "", nil); r.Status != http.StatusOK || clDigest(r.Body) != chunkedDigest {
			t.Fatalf("%s: GET the chunked blob: %d", when, r.Status)
		}
	}

	// Full: a little room left, less than any blob below needs.
	filler := filepath.Join(data, "filler")
	diskFill(t, filler, 256<<10)

	big := encPattern(4 << 20)
	bigDigest := clDigest(big)
	r := authDo(t, http.MethodPost, b.URL()+"/v2/full/new/blobs/uploads/?digest="+bigDigest, "", big, "Content-Type", "application/octet-stream")
	diskWantFull(t, "monolithic push of 4 MiB", r)
	if r := authDo(t, http.MethodHead, b.URL()+"/v2/full/new/blobs/"+bigDigest, "", nil); r.Status != http.StatusNotFound {
		t.Fatalf("HEAD the blob whose push failed: %d, want 404", r.Status)
	}
	if left := diskLeftovers(t, data); len(left) > 0 {
		t.Fatalf("the failed push left %v in DATA/uploads", left)
	}

	// A chunk of an upload session that does not fit: refused the same way; the session keeps
	// what it received (its Range says how much), and cancelling it gives the space back.
	r = authDo(t, http.MethodPost, b.URL()+"/v2/full/new/blobs/uploads/", "", nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("POST upload on a nearly full disk: %s", r)
	}
	loc := b.URL() + r.Header.Get("Location")
	r = authDo(t, http.MethodPatch, loc, "", big, "Content-Type", "application/octet-stream", "Content-Range", fmt.Sprintf("0-%d", len(big)-1))
	diskWantFull(t, "PATCH of a 4 MiB chunk", r)
	st := authDo(t, http.MethodGet, loc, "", nil)
	end, ok := crashParseRange(st.Header.Get("Range"))
	if st.Status != http.StatusNoContent || !ok || end >= int64(len(big))-1 {
		t.Fatalf("upload status after the refused chunk: %s, Range %q", st, st.Header.Get("Range"))
	}
	if r := authDo(t, http.MethodDelete, loc, "", nil); r.Status != http.StatusNoContent {
		t.Fatalf("DELETE the upload: %s", r)
	}

	// crane's push of an image with a 4 MiB layer fails, and says why.
	dir := t.TempDir()
	clWriteFile(t, filepath.Join(dir, "layer.tar"), clTar(t, map[string]string{"big.txt": string(big)}))
	out := clRunFails(t, dir, crane, "append", "--oci-empty-base", "-f", "layer.tar", "-t", b.Addr+"/full/crane:v1")
	if !strings.Contains(out, "INSUFFICIENT_STORAGE") || !strings.Contains(out, "disk is full") {
		t.Errorf("crane's push on a full disk does not say the disk is full:\n%s", out)
	}

	// No room at all: a manifest (a metadata write) is refused clearly or goes in whole.
	diskFill(t, filler, 0)
	unknownBlobs := authManifestJSON(t, []byte("x"), []byte("y"), nil) // blobs the repository lacks
	r = authPutManifest(t, b, "", "full/app", "full", before[0].Body)
	switch r.Status {
	case http.StatusCreated:
		authWantManifest(t, b, "", "full/app", "full", before[0].Manifest)
		t.Logf("a manifest PUT with no room on the disk went in (SQLite reused its WAL)")
	case diskFullStatus:
		diskWantFull(t, "manifest PUT", r)
		if r := authGetManifest(t, b, "", "full/app", "full"); r.Status != http.StatusNotFound {
			t.Fatalf("GET the tag whose PUT failed: %s", r)
		}
	default:
		t.Fatalf("manifest PUT with no room on the disk: %s, want 201 or %d", r, diskFullStatus)
	}
	if r := authPutManifest(t, b, "", "full/app", "bad", unknownBlobs); r.Status != http.StatusBadRequest || r.errorCode() != "MANIFEST_BLOB_UNKNOWN" {
		t.Fatalf("manifest PUT naming unknown blobs on a full disk: %s, want 400 MANIFEST_BLOB_UNKNOWN", r)
	}
	// Pulls go on while the disk is full.
	checkBefore("the disk full")

	// Space freed: the same pushes work, and nothing is corrupt.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	r = authDo(t, http.MethodPost, b.URL()+"/v2/full/new/blobs/uploads/?digest="+bigDigest, "", big, "Content-Type", "application/octet-stream")
	if r.Status != http.StatusCreated {
		t.Fatalf("monolithic push after space was freed: %s", r)
	}
	if d := diskChunkedPush(t, b, "full/new2", big, 4); d != bigDigest {
		t.Fatalf("chunked push after space was freed: %s", d)
	}
	pushed := clLastDigest(t, "crane append", clRun(t, dir, crane, "append", "--oci-empty-base", "-f", "layer.tar", "-t", b.Addr+"/full/crane:v1"))
	authWantManifest(t, b, "", "full/crane", "v1", pushed)
	checkBefore("after space was freed")
	if r := authDo(t, http.MethodGet, b.URL()+"/v2/full/new/blobs/"+bigDigest, "", nil); r.Status != http.StatusOK || clDigest(r.Body) != bigDigest {
		t.Fatalf("GET the blob pushed after space was freed: %d", r.Status)
	}
	if left := diskLeftovers(t, data); len(left) > 0 {
		t.Errorf("left in DATA/uploads: %v", left)
	}
	// Every blob file is whole (named by its content), unencrypted; encrypted, every one decrypts.
	if !encrypted {
		diskBlobFiles(t, data)
	}
	for _, bad := range []string{"internal error", "panic:"} {
		if strings.Contains(b.Log(), bad) {
			t.Errorf("berth logged %q:\n%s", bad, crashTail(b.Log(), 4000))
		}
	}
	if !strings.Contains(b.Log(), "disk full") {
		t.Errorf("berth did not log the full disk for its operator:\n%s", crashTail(b.Log(), 4000))
	}
}

// diskChunkedPush pushes content to repo in parts chunks with Content-Range, committing with PUT.
func diskChunkedPush(t *testing.T, b *berth, repo string, content []byte, parts int) string {
	t.Helper()
	r := authDo(t, http.MethodPost, b.URL()+"/v2/"+repo+"/blobs/uploads/", "", nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("POST upload to %s: %s", repo, r)
	}
	loc := b.URL() + r.Header.Get("Location")
	step := (len(content) + parts - 1) / parts
	for off := 0; off < len(content); off += step {
		end := min(off+step, len(content))
		r = authDo(t, http.MethodPatch, loc, "", content[off:end], "Content-Type", "application/octet-stream",
			"Content-Range", fmt.Sprintf("%d-%d", off, end-1))
		if r.Status != http.StatusAccepted {
			t.Fatalf("PATCH %d-%d to %s: %s", off, end-1, repo, r)
		}
		loc = b.URL() + r.Header.Get("Location")
	}
	d := clDigest(content)
	if r = authDo(t, http.MethodPut, loc+encSep(loc)+"digest="+d, "", nil); r.Status != http.StatusCreated {
		t.Fatalf("PUT upload to %s: %s", repo, r)
	}
	return d
}

// diskBlobFiles checks that every file under DATA/blobs hashes to its name.
func diskBlobFiles(t *testing.T, data string) {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(data, "blobs"), func(path string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		n++
		if got := clDigest(b); got != "sha256:"+de.Name() {
			t.Errorf("blob file %s holds %d bytes hashing to %s", path, len(b), got)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("no blob files")
	}
}

// TestPushFreeSpaceFloor: berth's data directory on a 48 MiB tmpfs with min_free_space 24 MiB.
// Pushes that leave the floor free go in; one that would go below it is refused before its body
// is stored, with 507 INSUFFICIENT_STORAGE and a message naming the floor, monolithic or as a
// chunk of a session, and leaves no file; pulls of what is stored go on.
func TestPushFreeSpaceFloor(t *testing.T) {
	data := diskFullMount(t, 48<<20)
	cfg := filepath.Join(t.TempDir(), "berth.yaml")
	clWriteFile(t, cfg, []byte(fmt.Sprintf("min_free_space: %d\n", 24<<20)))
	b := &berth{t: t, Data: data}
	b.start("--config", cfg)
	t.Cleanup(b.Stop)
	base := b.URL() + "/v2/floor/app/blobs/uploads/"
	monolithic := func(blob []byte) authResp {
		return authDo(t, http.MethodPost, base+"?digest="+clDigest(blob), "", blob, "Content-Type", "application/octet-stream")
	}
	a, c := encPattern(8<<20), encPattern(12<<20)
	if r := monolithic(a); r.Status != http.StatusCreated {
		t.Fatalf("push of 8 MiB with 48 free: %d %s", r.Status, r.Body)
	}
	if r := monolithic(c); r.Status != http.StatusCreated {
		t.Fatalf("push of 12 MiB with about 40 free: %d %s", r.Status, r.Body)
	}
	tooMuch := encPattern(8<<20 + 1)
	refused := func(what string, r authResp) {
		t.Helper()
		if r.Status != http.StatusInsufficientStorage || r.errorCode() != "INSUFFICIENT_STORAGE" || !bytes.Contains(r.Body, []byte("min_free_space")) {
			t.Errorf("%s below the floor: %d %s; want 507 INSUFFICIENT_STORAGE naming min_free_space", what, r.Status, r.Body)
		}
	}
	refused("a monolithic push", monolithic(tooMuch))
	r := authDo(t, http.MethodPost, base, "", nil)
	if r.Status != http.StatusAccepted {
		t.Fatalf("a new session with the floor still free: %d %s", r.Status, r.Body)
	}
	refused("a chunk", authDo(t, http.MethodPatch, b.URL()+r.Header.Get("Location"), "", tooMuch, "Content-Type", "application/octet-stream"))
	if _, err := os.Stat(filepath.Join(data, "blobs", "sha256", clDigest(tooMuch)[7:9], clDigest(tooMuch)[7:])); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the refused blob is stored: %v", err)
	}
	if got := clBlob(t, b, "floor/app", clDigest(a)); !bytes.Equal(got, a) {
		t.Errorf("pulling a stored blob below the floor: %d bytes, want the %d pushed", len(got), len(a))
	}
}
