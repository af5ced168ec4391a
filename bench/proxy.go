package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/berth/berth/internal/hubemu"
)

// The proxy measurement: berth, Distribution 2.8 and v3 as pull-through caches of one emulated
// Docker Hub (internal/hubemu, in this process), each pulled by N concurrent clients, first cold
// (a fresh data directory for every N), then warm (the same N again on the same server).

// The image on the emulated Docker Hub, and berth's rule for it. Distribution serves the upstream
// names as they are (library/proxybench); berth under its prefix (docker-hub/library/proxybench).
const (
	proxyRepo   = "library/proxybench"
	proxyTag    = "v1"
	proxyPrefix = "docker-hub"
)

// proxyMetrics are the rows of a wave table, per N.
var proxyMetrics = []struct{ name, format string }{
	{"manifest GET", "%.0f"},
	{"manifest HEAD", "%.0f"},
	{"blob GET", "%.0f"},
	{"token", "%.0f"},
	{"other", "%.0f"},
	{"blob MB", "%.1f"},
	{"upstream s", "%.2f"},
	{"wall s", "%.2f"},
	{"server CPU s", "%.2f"},
}

// proxyImage is what every client must receive: the manifest's digest, then its blobs.
type proxyImage struct {
	digest string
	blobs  []proxyBlob // config, then layers
	bytes  int64       // of all blobs
	layers int
}

type proxyBlob struct {
	digest string
	size   int64
}

// proxyLink is a state of the upstream link.
type proxyLink struct {
	label string
	rate  int64 // bytes/s shared by every blob body the upstream sends; 0: unthrottled
}

// proxyBench is the emulated Docker Hub holding the image, and the tables the points fill.
type proxyBench struct {
	hub        *hubemu.Hub
	img        proxyImage
	servers    []string // berth, berth-ttl, v3, 2.8 (those selected)
	links      []proxyLink
	cold, warm map[string]*series // by link label
	rss        *series
}

// proxyServers are the servers of the proxy measurement: berth twice, with revalidate: always
// ("berth", which revalidates each tag pull by HEAD as Distribution does) and ttl:24h
// ("berth-ttl"), then berth on the engines, one replica and three behind HAProxy (always), and
// Distribution.
func proxyServers(selected []string) []string {
	var out []string
	for _, s := range selected {
		switch s {
		case "berth":
			out = append(out, "berth", "berth-ttl")
		case "v3", "2.8", "berth-s3pg", "berth-s3pg-1", "berth-s3pg-3", "v3-s3":
			out = append(out, s)
		}
	}
	return out
}

// prepareProxy starts the emulated Docker Hub, pushes the image to it (not counted) and adds the
// proxy tables to res.
func prepareProxy(o options, p plan, res *results) (*proxyBench, error) {
	start := time.Now()
	pb := &proxyBench{servers: proxyServers(o.servers), cold: map[string]*series{}, warm: map[string]*series{}}
	if len(pb.servers) == 0 {
		return nil, errors.New("proxy: no registry among -servers")
	}
	// The token service on the registry's own host:port: Distribution v3.1 takes a token realm
	// on another host only when neither is an IP address or localhost (realmAllowed in
	// registry/proxy/proxyauth.go); with the realm on a second port it never asks for a token and
	// answers 404 for every tag.
	hub, err := hubemu.Start(hubemu.Options{RealmOnRegistry: true})
	if err != nil {
		return nil, err
	}
	pb.hub = hub
	addCleanup(hub.Close)
	layers := make([][]byte, p.proxyLayers)
	for i := range layers {
		layers[i] = randomBytes(uint64(200+i), p.proxyLayer)
	}
	img, err := hub.PushImage(proxyRepo, proxyTag, layers...)
	if err != nil {
		return nil, err
	}
	var m struct {
		Config struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"config"`
		Layers []struct {
			Digest string `json:"digest"`
			Size   int64  `json:"size"`
		} `json:"layers"`
	}
	if err := json.Unmarshal(img.Manifest, &m); err != nil {
		return nil, err
	}
	pb.img = proxyImage{digest: img.Digest, layers: len(m.Layers)}
	pb.img.blobs = append(pb.img.blobs, proxyBlob{m.Config.Digest, m.Config.Size})
	for _, l := range m.Layers {
		pb.img.blobs = append(pb.img.blobs, proxyBlob{l.Digest, l.Size})
	}
	for _, b := range pb.img.blobs {
		pb.img.bytes += b.size
	}
	pb.links = []proxyLink{{fmt.Sprintf("%.0f MB/s", float64(p.proxyRate)/1e6), p.proxyRate}, {"unthrottled", 0}}
	pb.tables(p, res)
	fmt.Printf("proxy upstream: emulated Docker Hub at %s with %s:%s (%d x %d MiB layers + config, %.1f MB), ready in %s\n",
		hub.RegistryURL(), proxyRepo, proxyTag, p.proxyLayers, p.proxyLayer>>20, float64(pb.img.bytes)/1e6,
		time.Since(start).Round(time.Millisecond))
	// What the throttled link gives one stream, and all the layers at once, straight from the
	// emulator: a server that fetches a blob once is bound by the first, one that fetches each
	// blob once per client by the second.
	one, all, err := pb.calibrate(p.proxyRate)
	if err != nil {
		return nil, fmt.Errorf("proxy: calibrating the link: %w", err)
	}
	msg := fmt.Sprintf("the emulated %s link gave one blob download %.1f MB/s, %d at once %.1f MB/s in all (measured from the bench before the servers)",
		pb.links[0].label, one, pb.img.layers, all)
	fmt.Println("proxy link:", msg)
	note(pb.cold[pb.links[0].label], msg)
	return pb, nil
}

// calibrate downloads one layer, then every layer at once, from the emulator with the link at
// rate, and returns the MB/s of each.
func (pb *proxyBench) calibrate(rate int64) (one, all float64, err error) {
	c := newClient(pb.img.layers)
	defer c.CloseIdleConnections()
	resp, err := c.Get(pb.hub.AuthURL() + "?service=" + hubemu.Service + "&scope=repository:" + proxyRepo + ":pull")
	if err != nil {
		return 0, 0, err
	}
	var tok struct {
		Token string `json:"token"`
	}
	err = json.NewDecoder(resp.Body).Decode(&tok)
	resp.Body.Close()
	if err != nil {
		return 0, 0, err
	}
	get := func(b proxyBlob) error {
		req, _ := http.NewRequest(http.MethodGet, pb.hub.RegistryURL()+"/v2/"+proxyRepo+"/blobs/"+b.digest, nil)
		req.Header.Set("Authorization", "Bearer "+tok.Token)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		n, err := io.Copy(io.Discard, resp.Body)
		if err == nil && (resp.StatusCode != http.StatusOK || n != b.size) {
			err = fmt.Errorf("GET blob: status %d, %d bytes", resp.StatusCode, n)
		}
		return err
	}
	layers := pb.img.blobs[1:]
	pb.hub.SetThrottle(rate)
	defer pb.hub.SetThrottle(0)
	t0 := time.Now()
	if err := get(layers[0]); err != nil {
		return 0, 0, err
	}
	one = float64(layers[0].size) / time.Since(t0).Seconds() / 1e6
	pb.hub.SetThrottle(rate)
	t0 = time.Now()
	errs := make([]error, len(layers))
	var wg sync.WaitGroup
	var total int64
	for i, b := range layers {
		total += b.size
		wg.Add(1)
		go func() { defer wg.Done(); errs[i] = get(b) }()
	}
	wg.Wait()
	all = float64(total) / time.Since(t0).Seconds() / 1e6
	return one, all, errors.Join(errs...)
}

// tables makes the proxy tables, their rows and berth's targets, in res.
func (pb *proxyBench) tables(p plan, res *results) {
	refs, berths := []string{}, []string{}
	for _, s := range pb.servers {
		if strings.HasPrefix(s, "berth") {
			berths = append(berths, s)
		} else {
			refs = append(refs, s)
		}
	}
	key := func(n int, metric string) []string { return []string{strconv.Itoa(n), metric} }
	imgMB := float64(pb.img.bytes) / 1e6
	scaleOut := slices.Contains(pb.servers, "berth-s3pg") && slices.Contains(pb.servers, "berth-s3pg-3")
	first, last := p.proxyConc[0], p.proxyConc[len(p.proxyConc)-1]
	for _, link := range pb.links {
		for _, wave := range []string{"cold", "warm"} {
			s := &series{
				name:    "proxy",
				label:   "proxy " + wave + ", " + link.label,
				heads:   []string{"N", "upstream"},
				servers: pb.servers,
				refs:    refs,
				key:     key,
			}
			if wave == "cold" {
				s.title = fmt.Sprintf("Proxy, cold pulls by N concurrent clients, upstream link %s (fresh server per N; image %.1f MB)", link.label, imgMB)
				s.notes = []string{
					"upstream = requests the emulated Docker Hub received during the wave, until it was quiet for 0.5 s after the last client; " +
						"other = blob HEADs, /v2/ pings, 401s and the rest; blob MB = upstream blob body bytes",
					"upstream s = when the last upstream blob byte went out, from the start of the wave; wall s = first request to the last byte of the last client " +
						"(each client: the manifest by tag, then every blob, in turn); server CPU s = the server's utime+stime during the wave",
				}
				if scaleOut {
					s.notes = append(s.notes, fmt.Sprintf("N=%d, berth on the engines alone: HAProxy spreads the clients over three replicas (berth-s3pg-3, %d each), one replica takes them all (berth-s3pg directly, berth-s3pg-1 behind the same HAProxy); "+
						"berth-s3pg at N=%d has the load of one of the three", p.proxyScale, p.proxyScale/3, p.proxyScale/3))
				}
				pb.cold[link.label] = s
			} else {
				s.title = fmt.Sprintf("Proxy, warm pulls: N clients again, on the same server after its cold wave, upstream link %s", link.label)
				s.notes = []string{"berth revalidates tags with revalidate: always (a HEAD per pull, as Distribution does), berth-ttl with ttl:24h; the ratios are berth's (always)"}
				pb.warm[link.label] = s
			}
			for _, n := range pb.ns(p) {
				// The berths that pull at this N.
				berthsN := slices.DeleteFunc(slices.Clone(berths), func(b string) bool { return !slices.Contains(p.proxyNs(b), n) })
				for _, m := range proxyMetrics {
					var g goal
					switch {
					case wave == "cold" && m.name == "manifest GET":
						g = equals{servers: berthsN, n: 1, why: "1 per manifest"}
					case wave == "cold" && m.name == "blob GET":
						g = equals{servers: berthsN, n: float64(len(pb.img.blobs)), why: "1 per blob"}
					case wave == "warm" && (m.name == "manifest GET" || m.name == "blob GET"):
						g = equals{servers: berthsN, n: 0}
					case wave == "cold" && m.name == "wall s" && link.rate > 0 && n == last && last != first:
						g = relative{server: "berth", base: s.find(key(first, "wall s")...), what: fmt.Sprintf("N=%d", first), bound: 1.3}
					case wave == "cold" && m.name == "wall s" && link.rate > 0 && n == p.proxyScale && scaleOut:
						// Three replicas serve N clients about as fast as one does (behind the same
						// load balancer when berth-s3pg-1 runs).
						ref := "berth-s3pg"
						if slices.Contains(pb.servers, "berth-s3pg-1") {
							ref = "berth-s3pg-1"
						}
						g = &target{of: "berth-s3pg-3", ref: ref, bound: 1.3}
					}
					s.addRow(key(n, m.name), m.format, g)
				}
			}
			res.proxy = append(res.proxy, s)
		}
	}
	pb.rss = &series{
		name:    "proxy",
		label:   "proxy peak RSS",
		title:   "Proxy, peak RSS of the server after its cold and warm waves (VmHWM), MiB",
		heads:   []string{"link", "N"},
		servers: pb.servers,
		refs:    refs,
		key:     func(n int, link string) []string { return []string{link, strconv.Itoa(n)} },
	}
	for _, link := range pb.links {
		for _, n := range pb.ns(p) {
			var g goal
			if n == last && last != first {
				g = relative{server: "berth", base: pb.rss.find(link.label, strconv.Itoa(first)), what: fmt.Sprintf("N=%d", first), bound: 1.5}
			}
			pb.rss.addRow([]string{link.label, strconv.Itoa(n)}, "%.1f", g)
		}
	}
	res.proxy = append(res.proxy, pb.rss)
}

// ns are the client counts of the proxy waves, of every server, in order.
func (pb *proxyBench) ns(p plan) []int {
	var all []int
	for _, name := range pb.servers {
		all = append(all, p.proxyNs(name)...)
	}
	slices.Sort(all)
	return slices.Compact(all)
}

// note adds a note to a table once (a note can come up again in another round).
func note(s *series, text string) {
	if !slices.Contains(s.notes, text) {
		s.notes = append(s.notes, text)
	}
}

// run measures every point once: for each link, each N, each server, a fresh server with a cold
// wave and a warm wave. A server whose upstream traffic at the previous N, scaled to this N, would
// take longer than the deadline on a throttled link is not run at this N (Distribution fetches
// every blob once per client); any wave that still takes longer is cut at the deadline.
func (pb *proxyBench) run(ctx context.Context, o options, p plan, tmp string, round int, res *results) {
	title := "proxy"
	if o.repeat > 1 {
		title = fmt.Sprintf("proxy (round %d of %d)", round, o.repeat)
	}
	fmt.Printf("\n== %s: %s\n", title, strings.Join(pb.servers, ", "))
	type prev struct {
		n     int
		bytes int64
	}
	for _, link := range pb.links {
		last := map[string]prev{}
		for _, n := range pb.ns(p) {
			for _, name := range pb.servers {
				if !slices.Contains(p.proxyNs(name), n) {
					continue
				}
				point := fmt.Sprintf("%s N=%d %s", link.label, n, name)
				if pr, ok := last[name]; ok && link.rate > 0 {
					need := float64(pr.bytes) * float64(n) / float64(pr.n)
					if secs := need / float64(link.rate); secs > p.proxyDeadline.Seconds() {
						msg := fmt.Sprintf("%s at N=%d not run: at N=%d it fetched %.0f MB from upstream; N=%d would need about %.0f MB, %.0f s at %s, beyond the %s deadline",
							name, n, pr.n, float64(pr.bytes)/1e6, n, need/1e6, secs, link.label, p.proxyDeadline)
						fmt.Printf("   %s: not run: would take about %.0f s on this link (%.0f MB upstream)\n", point, secs, need/1e6)
						for _, s := range []*series{pb.cold[link.label], pb.warm[link.label], pb.rss} {
							note(s, msg)
						}
						continue
					}
				}
				bytes, err := pb.point(ctx, o, p, tmp, link, n, name)
				if err != nil {
					fmt.Printf("   %s: ERROR: %v\n", point, err)
					res.errors = append(res.errors, fmt.Sprintf("proxy %s: %v", point, err))
					continue
				}
				if bytes > 0 {
					last[name] = prev{n, bytes}
				}
			}
		}
	}
}

// waveResult is one wave of N pulls.
type waveResult struct {
	wall     time.Duration
	cut      bool          // the deadline cut it: wall is the deadline, counts are those until then
	counts   hubemu.Counts // what the upstream received
	lastByte time.Duration // from the start to the last upstream blob byte
	busy     time.Duration // how long the upstream kept receiving after the last client was done
	cpu      float64       // the server's CPU seconds during the wave
	front    float64       // of which a cluster's HAProxy's
	others   float64       // CPU cores other processes used meanwhile
	err      error
}

// point starts the server as a proxy of the emulator with a fresh data directory, runs the cold
// and the warm wave, and records them with the server's peak RSS. It returns the upstream blob
// bytes of the cold wave (0 if it was cut).
func (pb *proxyBench) point(ctx context.Context, o options, p plan, tmp string, link proxyLink, n int, name string) (int64, error) {
	px := &proxySetup{upstream: pb.hub.RegistryURL(), revalidate: "always"}
	if name == "berth-ttl" {
		px.revalidate = "ttl:24h"
	}
	s, err := startServer(ctx, o, tmp, name, "", px)
	if err != nil {
		return 0, err
	}
	defer s.stop()
	repo := proxyRepo
	if strings.HasPrefix(name, "berth") {
		repo = proxyPrefix + "/" + proxyRepo
	}
	pb.hub.SetThrottle(link.rate) // also forgets the previous point's bookings of the link
	c := newClient(n)
	defer c.CloseIdleConnections()
	point := fmt.Sprintf("%s N=%d %s", link.label, n, name)

	if err := waitQuiet(o.quietWait); err != nil {
		return 0, err
	}
	cold := pb.wave(ctx, c, s, repo, n, p.proxyDeadline, true)
	if cold.err != nil {
		pb.cold[link.label].set(n, "wall s", name, failed(cold.err))
		return 0, cold.err
	}
	pb.record(pb.cold[link.label], n, name, cold)
	line := fmt.Sprintf("   %s: cold %s", point, cold.describe())
	var warm waveResult
	if cold.cut {
		msg := fmt.Sprintf("%s at N=%d: the cold wave was cut at the %s deadline (\">\": the counts are those until then); no warm wave", name, n, p.proxyDeadline)
		note(pb.cold[link.label], msg)
		note(pb.warm[link.label], msg)
	} else {
		if err := waitQuiet(o.quietWait); err != nil {
			return 0, err
		}
		warm = pb.wave(ctx, c, s, repo, n, p.proxyDeadline, false)
		if warm.err != nil {
			pb.warm[link.label].set(n, "wall s", name, failed(warm.err))
			fmt.Println(line)
			return 0, fmt.Errorf("warm wave: %w", warm.err)
		}
		pb.record(pb.warm[link.label], n, name, warm)
		line += "; warm " + warm.describe()
	}
	hwm, err := s.peakRSS()
	if err != nil {
		fmt.Println(line)
		return 0, err
	}
	mib := float64(hwm) / (1 << 20)
	pb.rss.set(n, link.label, name, value(mib))
	fmt.Printf("%s; peak RSS %.1f MiB\n", line, mib)
	if cold.cut {
		return 0, nil
	}
	return cold.counts.BlobBytes, nil
}

func (r waveResult) describe() string {
	c := r.counts
	wall := fmt.Sprintf("%.2f s", r.wall.Seconds())
	if r.cut {
		wall = "CUT at " + r.wall.String()
	}
	cpu := fmt.Sprintf("%.2f s", r.cpu)
	if r.front > 0 {
		cpu += fmt.Sprintf(" (HAProxy %.2f s)", r.front)
	}
	s := fmt.Sprintf("%s, server CPU %s (upstream %d manifest GET, %d HEAD, %d blob GET, %d token, %d other, %.1f MB",
		wall, cpu, c.ManifestGet, c.ManifestHead, c.BlobGet, c.Token, otherRequests(c), float64(c.BlobBytes)/1e6)
	if c.BlobBytes > 0 {
		s += fmt.Sprintf(", last byte at %.2f s", r.lastByte.Seconds())
	}
	if r.busy > time.Second {
		s += fmt.Sprintf(", busy %.1f s after the last client", r.busy.Seconds())
	}
	return s + ")"
}

// otherRequests are the upstream requests of no kind the tables show by itself.
func otherRequests(c hubemu.Counts) int64 {
	return c.BlobHead + c.TagList + c.Base + c.Other + c.Unauthorized + c.CDNGet
}

// record puts a wave's numbers in its table; a cut wave's are lower bounds.
func (pb *proxyBench) record(s *series, n int, name string, r waveResult) {
	mk := func(v float64) cell {
		if r.cut {
			return atLeast(v)
		}
		return value(v)
	}
	c := r.counts
	s.set(n, "manifest GET", name, mk(float64(c.ManifestGet)))
	s.set(n, "manifest HEAD", name, mk(float64(c.ManifestHead)))
	s.set(n, "blob GET", name, mk(float64(c.BlobGet)))
	s.set(n, "token", name, mk(float64(c.Token)))
	s.set(n, "other", name, mk(float64(otherRequests(c))))
	s.set(n, "blob MB", name, mk(float64(c.BlobBytes)/1e6))
	s.set(n, "upstream s", name, mk(r.lastByte.Seconds()))
	wall := measuredBy(r.wall.Seconds(), r.others)
	wall.lower = r.cut
	s.set(n, "wall s", name, wall)
	s.set(n, "server CPU s", name, mk(r.cpu))
}

// wave runs n clients at once, each pulling the image once, and returns the wall time from the
// start to the last client's last byte with what the upstream received meanwhile. With verify,
// client 0 checks the sha256 of every blob. A wave still running at the deadline is cut.
func (pb *proxyBench) wave(ctx context.Context, c *http.Client, s *server, repo string, n int, deadline time.Duration, verify bool) waveResult {
	var r waveResult
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	start := make(chan struct{})
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 256<<10)
			<-start
			if err := pb.pull(wctx, c, s.base, repo, verify && i == 0, buf); err != nil && wctx.Err() == nil {
				errOnce.Do(func() { firstErr = fmt.Errorf("client %d: %w", i, err) })
				cancel()
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	m, err := startMeter(s)
	if err != nil {
		close(start)
		cancel()
		<-done
		r.err = err
		return r
	}
	pb.hub.ResetCounts()
	w := watchUpstream(pb.hub)
	defer w.close()
	close(start)
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	select {
	case <-done:
		r.wall = time.Since(w.t0)
	case <-timer.C:
		r.wall, r.cut = deadline, true
		r.counts = pb.hub.Counts()
		_, r.lastByte = w.last()
		cancel()
		<-done
	}
	r.cpu, r.others, _, err = m.stop(0)
	r.front = m.front
	if r.err = errors.Join(firstErr, err); r.err == nil && !r.cut {
		r.counts, r.lastByte, r.busy = w.settle(r.wall)
	}
	return r
}

// upstreamWatch follows the emulator's counts during a wave: when they last changed, and when the
// last blob byte went out.
type upstreamWatch struct {
	hub  *hubemu.Hub
	t0   time.Time
	stop chan struct{}
	done chan struct{}

	mu       sync.Mutex
	changed  time.Duration // any count, since t0
	lastByte time.Duration // BlobBytes, since t0
}

// countsKey is every number of the counts, comparable.
func countsKey(c hubemu.Counts) [14]int64 {
	return [14]int64{c.ManifestGet, c.ManifestHead, c.BlobGet, c.BlobHead, c.TagList, c.Base, c.Other,
		c.Token, c.CDNGet, c.Pulls, c.Rejected429, c.Unauthorized, c.Faulted, c.BlobBytes}
}

func watchUpstream(hub *hubemu.Hub) *upstreamWatch {
	w := &upstreamWatch{hub: hub, t0: time.Now(), stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		tick := time.NewTicker(20 * time.Millisecond)
		defer tick.Stop()
		prev := countsKey(hub.Counts())
		for {
			select {
			case <-w.stop:
				return
			case <-tick.C:
			}
			k := countsKey(hub.Counts())
			if k == prev {
				continue
			}
			at := time.Since(w.t0)
			w.mu.Lock()
			w.changed = at
			if k[13] != prev[13] {
				w.lastByte = at
			}
			w.mu.Unlock()
			prev = k
		}
	}()
	return w
}

func (w *upstreamWatch) last() (changed, lastByte time.Duration) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed, w.lastByte
}

func (w *upstreamWatch) close() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// settle waits until the upstream has received no request and no blob byte for half a second
// (Distribution goes on filling its cache after it has served its clients), at most a minute
// after the wave's end (at wall), and returns the counts, when the last blob byte went out and
// how long the upstream stayed busy after the wave's end.
func (w *upstreamWatch) settle(wall time.Duration) (hubemu.Counts, time.Duration, time.Duration) {
	for time.Since(w.t0) < wall+time.Minute {
		time.Sleep(100 * time.Millisecond)
		if changed, _ := w.last(); time.Since(w.t0)-changed >= 500*time.Millisecond {
			break
		}
	}
	w.close()
	changed, lastByte := w.last()
	return w.hub.Counts(), lastByte, max(changed-wall, 0)
}

// pull is one client pulling the image as docker or containerd do: the manifest by tag with their
// Accept header, then every blob, reading each body to its end and checking its length (and,
// with verify, its sha256).
func (pb *proxyBench) pull(ctx context.Context, c *http.Client, base, repo string, verify bool, buf []byte) error {
	u := base + "/v2/" + repo + "/manifests/" + proxyTag
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	req.Header.Set("Accept", acceptAll)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	resp.Body.Close()
	if err != nil {
		return fmt.Errorf("GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: status %d: %.300s", u, resp.StatusCode, bytes.TrimSpace(body))
	}
	if got := sha256Digest(body); got != pb.img.digest {
		return fmt.Errorf("GET %s: manifest %s, want %s", u, got, pb.img.digest)
	}
	if ct := resp.Header.Get("Content-Type"); ct != mtManifest {
		return fmt.Errorf("GET %s: Content-Type %q, want %q", u, ct, mtManifest)
	}
	for _, b := range pb.img.blobs {
		if err := pullBlob(ctx, c, base+"/v2/"+repo+"/blobs/"+b.digest, b, verify, buf); err != nil {
			return err
		}
	}
	return nil
}

func pullBlob(ctx context.Context, c *http.Client, u string, b proxyBlob, verify bool, buf []byte) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 300))
		return fmt.Errorf("GET %s: status %d: %s", u, resp.StatusCode, bytes.TrimSpace(msg))
	}
	var h hash.Hash
	if verify {
		h = sha256.New()
	}
	var n int64
	for {
		k, err := resp.Body.Read(buf)
		n += int64(k)
		if h != nil {
			h.Write(buf[:k])
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return fmt.Errorf("GET %s: after %d bytes: %w", u, n, err)
		}
	}
	if n != b.size {
		return fmt.Errorf("GET %s: %d bytes, want %d", u, n, b.size)
	}
	if h != nil {
		if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != b.digest {
			return fmt.Errorf("GET %s: content %s", u, got)
		}
	}
	return nil
}
