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

// berth-enc is berth with encryption at rest (a key file): only the download is measured on it,
// and compared with berth's (the same blob, the same client), since blob reads are where
// encryption costs: every byte is read, decrypted and written instead of sent with sendfile.

// newEncSeries is the table of downloads from berth with and without encryption at rest.
func newEncSeries(o options, p plan) *series {
	s := &series{
		name:    "download",
		label:   "download encrypted",
		title:   fmt.Sprintf("Encrypted blob download, %d MiB blob: berth-enc (AES-256-GCM at rest, key file) against berth (plain files, sendfile)", p.dlSize>>20),
		heads:   []string{"conc", "metric"},
		servers: slices.DeleteFunc([]string{"berth", "berth-enc"}, func(s string) bool { return !slices.Contains(o.servers, s) }),
		key:     func(conc int, metric string) []string { return []string{strconv.Itoa(conc), metric} },
		notes:   []string{"MB/s = 10^6 bytes/s; CPU s/GB = server utime+stime per 10^9 bytes sent (lower is better)"},
	}
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
