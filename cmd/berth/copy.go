package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// copyOptions are the flags of `berth copy`.
type copyOptions struct {
	allPlatforms       bool
	platform           string
	insecure           bool
	srcCreds, dstCreds string
}

func copyCmd() *cobra.Command {
	var o copyOptions
	cmd := &cobra.Command{
		Use:   "copy SRC DST",
		Short: "Copy an image (every platform of an index) from any registry to another, e.g. into berth",
		Long: "copy copies an image or a multi-platform index, byte for byte (same digests), from one\n" +
			"registry to another, e.g. to migrate repositories into berth. To pre-warm berth's cache,\n" +
			"copy from a cache prefix (berth refuses pushes into one): the pull fills the cache.\n" +
			"DST without a tag or digest takes SRC's. localhost and 127.0.0.0/8 are plain http; other\n" +
			"plain-http registries need --insecure. Credentials come from --src-creds/--dst-creds or\n" +
			"the Docker config (~/.docker/config.json and its credential helpers).\n\n" +
			"Examples:\n  berth copy docker.io/library/nginx:1.27 localhost:5000/mirror/nginx\n" +
			"  berth copy localhost:5000/docker-hub/nginx:1.27 localhost:5000/warm/nginx",
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			f := cmd.Flags()
			if f.Changed("platform") && !f.Changed("all-platforms") {
				o.allPlatforms = false
			}
			return runCopy(cmd.Context(), cmd.OutOrStdout(), cmd.ErrOrStderr(), args[0], args[1], o)
		},
	}
	f := cmd.Flags()
	f.BoolVar(&o.allPlatforms, "all-platforms", true, "copy every platform of an index (false: only --platform)")
	f.StringVar(&o.platform, "platform", "linux/"+runtime.GOARCH, "the platform to copy from an index when not copying all (implies --all-platforms=false)")
	f.BoolVar(&o.insecure, "insecure", false, "allow plain http for SRC and DST (localhost and 127.0.0.0/8 always may)")
	f.StringVar(&o.srcCreds, "src-creds", "", "USER:PASSWORD for SRC (default: the Docker config)")
	f.StringVar(&o.dstCreds, "dst-creds", "", "USER:PASSWORD for DST (default: the Docker config)")
	return cmd
}

func runCopy(ctx context.Context, stdout, stderr io.Writer, src, dst string, o copyOptions) error {
	srcRef, err := parseCopyRef(src, o.insecure)
	if err != nil {
		return err
	}
	dstRef, err := parseCopyDst(dst, srcRef, o.insecure)
	if err != nil {
		return err
	}
	srcOpts, err := copyRemoteOptions(ctx, o.srcCreds, "--src-creds")
	if err != nil {
		return err
	}
	dstOpts, err := copyRemoteOptions(ctx, o.dstCreds, "--dst-creds")
	if err != nil {
		return err
	}
	if !o.allPlatforms {
		p, err := v1.ParsePlatform(o.platform)
		if err != nil {
			return fmt.Errorf("--platform: %w", err)
		}
		srcOpts = append(srcOpts, remote.WithPlatform(*p))
	}

	desc, err := remote.Get(srcRef, srcOpts...)
	if err != nil {
		return fmt.Errorf("fetching %s: %w", srcRef, err)
	}
	var (
		push   func(...remote.Option) error
		digest v1.Hash
		what   []string // what is copied, for the output
	)
	switch {
	case desc.MediaType.IsIndex() && o.allPlatforms:
		idx, err := desc.ImageIndex()
		if err != nil {
			return err
		}
		im, err := idx.IndexManifest()
		if err != nil {
			return fmt.Errorf("reading the index of %s: %w", srcRef, err)
		}
		what = append(what, fmt.Sprintf("index %s: %d manifests", desc.Digest, len(im.Manifests)))
		for _, m := range im.Manifests {
			what = append(what, fmt.Sprintf("  %s %s", platformString(m.Platform), m.Digest))
		}
		digest = desc.Digest
		push = func(opts ...remote.Option) error { return remote.WriteIndex(dstRef, idx, opts...) }
	default:
		img, err := desc.Image() // an index resolves to the --platform image
		if err != nil {
			return fmt.Errorf("%s: %w", srcRef, err)
		}
		if digest, err = img.Digest(); err != nil {
			return err
		}
		if desc.MediaType.IsIndex() {
			what = append(what, fmt.Sprintf("index %s: copying only %s %s", desc.Digest, o.platform, digest))
		} else {
			what = append(what, fmt.Sprintf("image %s", digest))
		}
		push = func(opts ...remote.Option) error { return remote.Write(dstRef, img, opts...) }
	}

	if _, byDigest := dstRef.(name.Digest); byDigest {
		dstRef = dstRef.Context().Digest(digest.String()) // a push by digest is by the content's
	}
	fmt.Fprintf(stderr, "copying %s to %s\n%s\n", srcRef, dstRef, strings.Join(what, "\n"))
	start := time.Now()
	updates := make(chan v1.Update, 64)
	pr := newProgressPrinter(stderr, isTerminal(stderr))
	done := make(chan v1.Update, 1)
	go func() { done <- pr.run(updates) }() // remote closes updates when the push ends
	err = push(append(dstOpts, remote.WithProgress(updates))...)
	last := <-done
	if err != nil {
		pr.finish(last)
		return fmt.Errorf("copying %s to %s: %w", srcRef, dstRef, err)
	}
	// go-containerregistry does not count a blob's last bytes when they come with io.EOF (small
	// blobs: all of them); the push succeeded, so everything it counted in Total is there.
	last.Complete = last.Total
	pr.finish(last)
	fmt.Fprintf(stderr, "copied %s in %s\n", humanBytes(last.Total), time.Since(start).Round(time.Millisecond))
	_, err = fmt.Fprintln(stdout, dstRef.Context().Digest(digest.String()).String())
	return err
}

// parseCopyRef parses an image reference; registries on localhost and loopback addresses are plain
// http, as is every registry with --insecure.
func parseCopyRef(s string, insecure bool) (name.Reference, error) {
	ref, err := name.ParseReference(s)
	if err != nil {
		return nil, err
	}
	if insecure || isLoopbackRegistry(ref.Context().RegistryStr()) {
		return name.ParseReference(s, name.Insecure)
	}
	return ref, nil
}

// parseCopyDst parses DST; a repository without a tag or digest takes src's tag or digest.
func parseCopyDst(s string, src name.Reference, insecure bool) (name.Reference, error) {
	var opts []name.Option
	if r, err := name.NewRepository(s); err == nil && (insecure || isLoopbackRegistry(r.RegistryStr())) {
		opts = append(opts, name.Insecure)
	}
	if repo, err := name.NewRepository(s, opts...); err == nil {
		if d, ok := src.(name.Digest); ok {
			return repo.Digest(d.DigestStr()), nil
		}
		return repo.Tag(src.Identifier()), nil
	}
	return parseCopyRef(s, insecure)
}

// isLoopbackRegistry reports whether host[:port] is localhost or a loopback address.
func isLoopbackRegistry(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(strings.Trim(host, "[]"))
	return err == nil && a.IsLoopback()
}

// copyRemoteOptions authenticates with USER:PASSWORD when given, else from the Docker config.
func copyRemoteOptions(ctx context.Context, creds, flag string) ([]remote.Option, error) {
	opts := []remote.Option{remote.WithContext(ctx), remote.WithUserAgent("berth")}
	if creds == "" {
		return append(opts, remote.WithAuthFromKeychain(authn.DefaultKeychain)), nil
	}
	user, pass, ok := strings.Cut(creds, ":")
	if !ok || user == "" {
		return nil, fmt.Errorf("%s: want USER:PASSWORD", flag)
	}
	return append(opts, remote.WithAuth(&authn.Basic{Username: user, Password: pass})), nil
}

func platformString(p *v1.Platform) string {
	if p == nil {
		return "(no platform)"
	}
	return p.String()
}

// isTerminal reports whether w is a terminal (progress bar) rather than a file or pipe (lines).
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// How often the line output reports progress, and how often the bar is redrawn.
var (
	progressEvery = 2 * time.Second
	barEvery      = 100 * time.Millisecond
)

// progressPrinter shows a copy's progress: a redrawn bar on a terminal, else a line now and then
// and one at the end.
type progressPrinter struct {
	w     io.Writer
	tty   bool
	every time.Duration
	last  time.Time // of the last line or redraw
	shown v1.Update // what it showed last
}

func newProgressPrinter(w io.Writer, tty bool) *progressPrinter {
	p := &progressPrinter{w: w, tty: tty, every: progressEvery}
	if tty {
		p.every = barEvery
	}
	return p
}

// run consumes updates until the channel closes and returns the last one (with the error, if any).
func (p *progressPrinter) run(updates <-chan v1.Update) v1.Update {
	var last v1.Update
	for u := range updates {
		if u.Error != nil {
			last.Error = u.Error
			continue
		}
		last.Total, last.Complete = u.Total, u.Complete
		if time.Since(p.last) >= p.every {
			p.show(last)
		}
	}
	return last
}

// finish shows the final state: the bar (and ends its line), or a last line unless it would
// repeat the one before.
func (p *progressPrinter) finish(u v1.Update) {
	switch {
	case p.tty && !p.last.IsZero():
		p.show(u)
		fmt.Fprintln(p.w)
	case !p.tty && u.Total > 0 && (u.Total != p.shown.Total || u.Complete != p.shown.Complete):
		p.show(u)
	}
}

func (p *progressPrinter) show(u v1.Update) {
	p.last, p.shown = time.Now(), u
	pct := int64(0)
	if u.Total > 0 {
		pct = min(u.Complete*100/u.Total, 100)
	}
	if !p.tty {
		fmt.Fprintf(p.w, "progress: %s of %s (%d%%)\n", humanBytes(u.Complete), humanBytes(u.Total), pct)
		return
	}
	const width = 30
	filled := int(pct) * width / 100
	bar := strings.Repeat("=", filled)
	if filled < width {
		bar += ">" + strings.Repeat(" ", width-filled-1)
	}
	fmt.Fprintf(p.w, "\r[%s] %3d%%  %s / %s\x1b[K", bar, pct, humanBytes(u.Complete), humanBytes(u.Total))
}
