package sealed

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"
)

func cpuTime() float64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}

// BenchmarkRead reads a 64 MiB sealed blob from the filesystem as net/http sends it (32 KiB
// reads), and reports CPU s/GB.
func BenchmarkRead(b *testing.B) {
	s, _ := newFSSealedB(b)
	data := make([]byte, 64<<20)
	rand.Read(data)
	d := digest.FromBytes(data)
	if _, err := s.Put(context.Background(), d, bytes.NewReader(data)); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(data)))
	b.ResetTimer()
	c0 := cpuTime()
	for range b.N {
		r, _, err := s.Open(context.Background(), d)
		if err != nil {
			b.Fatal(err)
		}
		if n, err := io.CopyBuffer(io.Discard, r, buf); err != nil || n != int64(len(data)) {
			b.Fatal(n, err)
		}
		r.Close()
	}
	b.ReportMetric((cpuTime()-c0)/(float64(b.N)*float64(len(data))/1e9), "cpu-s/GB")
}
