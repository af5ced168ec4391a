package main

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// berth-enc is berth with encryption at rest (a key file) and its default memory cache of
// decrypted blobs (encryption.memory_cache, 512 MiB): only the download is measured on it, and
// compared with berth's (the same blob, the same client), since blob reads are where encryption
// costs. The first download of the blob decrypts it (while the cache fills, from which it reads
// what the fill has decrypted); the repeated downloads of the windows are served from the memory
// cache with sendfile, as berth serves its file from the page cache. So "first MB/s" is the cost
// of decryption (cold), the other rows that of a hot blob.

// newEncSeries is the table of downloads from berth with and without encryption at rest.
func newEncSeries(o options, p plan) *series {
	s := &series{
		name:    "download",
		label:   "download encrypted",
		title:   fmt.Sprintf("Encrypted blob download, %d MiB blob: berth-enc (AES-256-GCM at rest, key file, 512 MiB memory cache) against berth (plain files, sendfile)", p.dlSize>>20),
		heads:   []string{"conc", "metric"},
		servers: slices.DeleteFunc([]string{"berth", "berth-enc"}, func(s string) bool { return !slices.Contains(o.servers, s) }),
		key:     func(conc int, metric string) []string { return []string{strconv.Itoa(conc), metric} },
		notes: []string{"MB/s = 10^6 bytes/s; CPU s/GB = server utime+stime per 10^9 bytes sent (lower is better)",
			"first MB/s: the first download after the push, one client alone (one sample): cold, berth-enc decrypts the blob (into its memory cache); " +
				"the other rows download it again and again: hot, berth-enc sends it from its memory cache with sendfile"},
	}
	s.addRow(s.key(1, "first MB/s"), "%.0f", nil)
	for _, c := range p.dlConc {
		s.addRow(s.key(c, "MB/s"), "%.0f", &target{of: "berth-enc", ref: "berth", atLeast: true, bound: 0.7})
		s.addRow(s.key(c, "CPU s/GB"), "%.3f", nil)
	}
	return s
}

// downloadSeries are the tables a server's download numbers go in.
func (res *results) downloadSeries(server string) []*series {
	switch server {
	case "berth-enc":
		return []*series{res.enc}
	case "berth":
		return []*series{res.download, res.enc}
	}
	return []*series{res.download}
}

// encTable is the table of res.enc, with the ratios encrypted/plain spelled out.
func (res *results) encTable() table {
	t := res.enc.table()
	var ratios []string
	for _, r := range res.enc.rows {
		e, b := r.vals["berth-enc"], r.vals["berth"]
		if e.ok && b.ok && b.v > 0 {
			ratios = append(ratios, fmt.Sprintf("%s %.2fx", strings.Join(r.labels, " "), e.v/b.v))
		}
	}
	if len(ratios) > 0 {
		t.notes = append(t.notes, "berth-enc/berth: "+strings.Join(ratios, ", "))
	}
	return t
}

// encrypted reports whether the encrypted-download table is part of the run.
func (res *results) encrypted() bool {
	return slices.Contains(res.enc.servers, "berth-enc") && slices.Contains(res.only, "download")
}

// writeKeyFile writes a new random key file, as `berth encryption keygen` does.
func writeKeyFile(path string) error {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(hex.EncodeToString(key)+"\n"), 0o600)
}
