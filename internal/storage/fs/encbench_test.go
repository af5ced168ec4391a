package fs

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth/berth/internal/oci"
)

// benchBlob is a 64 MiB random blob in an encrypted and in a plain store.
var benchBlob struct {
	s    *EncryptedStore
	p    *Store
	d    oci.Digest
	size int64
}

func benchStores(b *testing.B) (*EncryptedStore, *Store, oci.Digest) {
	b.Helper()
	dir := b.TempDir()
	s, err := NewEncrypted(filepath.Join(dir, "enc"), keysOf("bench"))
	if err != nil {
		b.Fatal(err)
	}
	p, err := New(filepath.Join(dir, "plain"))
	if err != nil {
		b.Fatal(err)
	}
	data := make([]byte, 64<<20)
	rand.Read(data)
	d := digest.FromBytes(data)
	if _, err := s.Put(context.Background(), d, bytes.NewReader(data)); err != nil {
		b.Fatal(err)
	}
	if _, err := p.Put(context.Background(), d, bytes.NewReader(data)); err != nil {
		b.Fatal(err)
	}
	benchBlob.s, benchBlob.p, benchBlob.d, benchBlob.size = s, p, d, int64(len(data))
	return s, p, d
}

func cpuTime() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// readBench reads d from st as net/http sends a response (32 KiB reads) and reports CPU s/GB.
func readBench(b *testing.B, open func() (io.ReadCloser, error)) {
	buf := make([]byte, 32<<10)
	b.SetBytes(benchBlob.size)
	b.ResetTimer()
	c0 := cpuTime()
	for range b.N {
		r, err := open()
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.CopyBuffer(io.Discard, io.LimitReader(r, benchBlob.size), buf); err != nil || n != benchBlob.size {
			b.Fatal(n, err)
		}
		r.Close()
	}
	b.ReportMetric((cpuTime()-c0)/(float64(b.N)*float64(benchBlob.size)/1e9), "cpu-s/GB")
}

// BenchmarkEncryptedRead reads a 64 MiB sealed blob as net/http sends it (32 KiB reads).
func BenchmarkEncryptedRead(b *testing.B) {
	s, _, d := benchStores(b)
	readBench(b, func() (io.ReadCloser, error) { r, _, err := s.Open(context.Background(), d); return r, err })
}

// BenchmarkEncryptedFirstRead reads the blob as BenchmarkEncryptedRead does, but with a memory
// cache that does not hold it yet (cold): the read follows the fill that decrypts it into memory.
func BenchmarkEncryptedFirstRead(b *testing.B) {
	s, _, d := benchStores(b)
	c, err := newMemCache(512<<20, s.openSealed, s.exists)
	if err != nil {
		b.Fatal(err)
	}
	s.cache = c
	readBench(b, func() (io.ReadCloser, error) {
		c.wait()
		c.drop(d)
		r, _, err := s.Open(context.Background(), d)
		if _, ok := r.(*fillReader); err == nil && !ok {
			b.Fatalf("Open = %T, want a reader of a fill", r)
		}
		return r, err
	})
}

// BenchmarkPlainRead is the same from the plain store (read, not sendfile).
func BenchmarkPlainRead(b *testing.B) {
	_, p, d := benchStores(b)
	readBench(b, func() (io.ReadCloser, error) {
		r, _, err := p.Open(context.Background(), d)
		return struct {
			io.Reader
			io.Closer
		}{r, r}, err
	})
}

// BenchmarkEncryptedServe serves the blob with http.ServeContent over loopback, as the registry
// does: decrypted, from the memory cache (hot: sendfile from memory), and from the plain store.
func BenchmarkEncryptedServe(b *testing.B) {
	s, p, d := benchStores(b)
	cached, err := NewEncrypted(s.root, keysOf("bench"), MemoryCache(512<<20))
	if err != nil {
		b.Fatal(err)
	}
	if r, _, err := cached.Open(context.Background(), d); err == nil { // a read fills the cache
		r.Read(make([]byte, 1))
		r.Close()
	}
	cached.cache.wait()
	for _, c := range []struct {
		name string
		st   interface {
			Open(context.Context, oci.Digest) (io.ReadSeekCloser, int64, error)
		}
	}{{"enc", s}, {"enc-cached", cached}, {"plain", p}} {
		b.Run(c.name, func(b *testing.B) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				f, _, err := c.st.Open(r.Context(), d)
				if err != nil {
					http.Error(w, err.Error(), 500)
					return
				}
				defer f.Close()
				w.Header().Set("Content-Type", "application/octet-stream")
				http.ServeContent(w, r, "", time.Time{}, f)
			}))
			defer srv.Close()
			buf := make([]byte, 1<<20)
			b.SetBytes(benchBlob.size)
			b.ResetTimer()
			c0 := cpuTime()
			for range b.N {
				resp, err := http.Get(srv.URL)
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{resp.Body}, buf)
				resp.Body.Close()
				if err != nil || n != benchBlob.size {
					b.Fatal(n, err)
				}
			}
			b.ReportMetric((cpuTime()-c0)/(float64(b.N)*float64(benchBlob.size)/1e9), "cpu-s/GB")
		})
	}
}
