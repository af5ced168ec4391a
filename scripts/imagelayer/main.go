// Command imagelayer writes the one filesystem layer of berth's own image (scripts/image.sh):
// the static binary, a non-root user, its data directory and CA certificates, as a tar whose
// bytes depend only on its inputs (fixed times, owners and order), so that two builds of one
// commit give one image digest.
//
// Usage: go run ./scripts/imagelayer -bin BERTH -ca CERTS.crt -mtime UNIX -o layer.tar
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"
)

// The user berth runs as in its image: not root, and not a uid a host is likely to have given
// someone (65532 is distroless's "nonroot", so volume permissions people already set match).
const (
	uid  = 65532
	user = "berth"
)

func main() {
	bin := flag.String("bin", "", "the berth binary (static, for the image's platform)")
	ca := flag.String("ca", "/etc/ssl/certs/ca-certificates.crt", "PEM bundle of CA certificates (berth talks HTTPS to upstream registries)")
	mtime := flag.Int64("mtime", 0, "every entry's modification time, seconds since the epoch (SOURCE_DATE_EPOCH)")
	out := flag.String("o", "", "the layer tar to write")
	flag.Parse()
	if err := run(*bin, *ca, *out, time.Unix(*mtime, 0).UTC()); err != nil {
		fmt.Fprintln(os.Stderr, "imagelayer:", err)
		os.Exit(1)
	}
}

type entry struct {
	name  string
	mode  int64
	owner int
	body  []byte // nil: a directory
}

func run(bin, ca, out string, mtime time.Time) error {
	if bin == "" || out == "" {
		return errors.New("-bin and -o are required")
	}
	binary, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	certs, err := os.ReadFile(ca)
	if err != nil {
		return fmt.Errorf("CA certificates (install Debian's ca-certificates, or pass -ca): %w", err)
	}
	if !bytes.Contains(certs, []byte("-----BEGIN CERTIFICATE-----")) {
		return fmt.Errorf("%s holds no PEM certificate", ca)
	}
	passwd := fmt.Sprintf("root:x:0:0:root:/root:/sbin/nologin\n%s:x:%d:%d:%s:/data:/sbin/nologin\n", user, uid, uid, user)
	group := fmt.Sprintf("root:x:0:\n%s:x:%d:\n", user, uid)
	// In the order a directory listing of the image would give them: parents first, then sorted.
	entries := []entry{
		{name: "data/", mode: 0o700, owner: uid}, // berth's data directory: the volume to mount here
		{name: "etc/", mode: 0o755},
		{name: "etc/group", mode: 0o644, body: []byte(group)},
		// Go's resolver reads it: files first, as glibc does, then DNS.
		{name: "etc/nsswitch.conf", mode: 0o644, body: []byte("hosts: files dns\n")},
		{name: "etc/passwd", mode: 0o644, body: []byte(passwd)},
		{name: "etc/ssl/", mode: 0o755},
		{name: "etc/ssl/certs/", mode: 0o755},
		{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: certs},
		{name: "tmp/", mode: 0o1777}, // os.TempDir for anyone who needs it
		{name: "usr/", mode: 0o755},
		{name: "usr/local/", mode: 0o755},
		{name: "usr/local/bin/", mode: 0o755},
		{name: "usr/local/bin/berth", mode: 0o755, body: binary},
	}
	f, err := os.Create(out)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.owner, Gid: e.owner, ModTime: mtime,
			Typeflag: tar.TypeDir, Format: tar.FormatPAX}
		if e.body != nil {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			f.Close()
			return err
		}
		if _, err := tw.Write(e.body); err != nil {
			f.Close()
			return err
		}
	}
	if err := tw.Close(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
