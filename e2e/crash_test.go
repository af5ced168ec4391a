package e2e

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCrash proves that killing berth at any moment (SIGKILL) leaves no corrupt or half-visible
// blob, manifest or tag, and that every interrupted upload either resumes or is cleanly unknown.
//
// Each round starts concurrent workers that push monolithic, chunked and streamed blobs (streamed
// bodies go through a slow reader, so a kill lands in the middle of a body) and manifests under
// tags that the workers overwrite concurrently, recording what the server acknowledged. After a
// random delay berth is killed with SIGKILL and restarted on the same data directory, and
// everything ever acknowledged, every tag, the catalog, every blob file on disk and every
// interrupted upload session is checked. The ledger carries over from round to round, so every
// round checks again what earlier rounds left.
//
// One worker deletes manifests, tags and blobs in a repository of its own (crash_delete_test.go):
// after each restart, that repository must be as the worker's acknowledged requests left it, with
// the request the kill interrupted either wholly done or not at all, never half.
//
// BERTH_CRASH_SEED=<n> replays the same contents and kill delays.
func TestCrash(t *testing.T) {
	crashRounds(t, 5, "")
}

// TestCrashEncrypted is TestCrash with encryption at rest: every blob file on disk must decrypt
// and verify against its name after each kill.
func TestCrashEncrypted(t *testing.T) {
	key := filepath.Join(t.TempDir(), "kek")
	if out, err := exec.Command(berthBin, "encryption", "keygen", key).CombinedOutput(); err != nil {
		t.Fatalf("berth encryption keygen: %v\n%s", err, out)
	}
	crashRounds(t, 3, key)
}

// crashRounds runs rounds of kill -9 against berth, encrypting at rest with keyFile if not "".
func crashRounds(t *testing.T, rounds int, keyFile string) {
	began := time.Now()
	seed := uint64(time.Now().UnixNano())
	if s := os.Getenv("BERTH_CRASH_SEED"); s != "" {
		var err error
		if seed, err = strconv.ParseUint(s, 10, 64); err != nil {
			t.Fatalf("BERTH_CRASH_SEED: %v", err)
		}
	}
	t.Logf("seed %d (BERTH_CRASH_SEED=%d replays it)", seed, seed)
	if testing.Short() {
		rounds = min(rounds, 2)
	}

	var args []string
	if keyFile != "" {
		args = []string{"--encryption-key-file", keyFile}
	}
	b := startBerth(t, args...)
	led := newCrashLedger()
	rng := rand.New(rand.NewPCG(seed, 0))
	// Contents that several workers push into several repositories at once, so that two requests
	// place the same blob concurrently.
	common := make([][]byte, 4)
	for i := range common {
		common[i] = crashRandBytes(rng, 4<<10+rng.IntN(60<<10))
	}

	for round := 1; round <= rounds; round++ {
		r := &crashRun{t: t, b: b, led: led, round: round, common: common, client: crashClient()}
		var wg sync.WaitGroup
		for i, kind := range crashWorkers {
			wrng := rand.New(rand.NewPCG(seed, uint64(round*1000+i+1)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				r.work(kind, wrng)
			}()
		}
		delay := 150*time.Millisecond + time.Duration(rng.Int64N(int64(1200*time.Millisecond)))
		time.Sleep(delay)
		r.stopping.Store(true)
		b.Kill()
		killed := time.Now()
		wg.Wait()
		r.client.CloseIdleConnections()
		led.settle(killed)
		before := b.Log()
		led.stats.kills++
		for _, bad := range []string{"panic:", "internal error", "fatal error"} {
			if strings.Contains(before, bad) {
				t.Errorf("round %d: berth logged %q before the kill:\n%s", round, bad, crashTail(before, 4000))
			}
		}

		restarted := time.Now()
		b.start(args...)
		v := &crashVerifier{t: t, round: round, base: b.URL(), data: b.Data, led: led, client: crashClient(),
			rng: rand.New(rand.NewPCG(seed, uint64(round*1000+999))), seen: map[crashBlobKey]bool{}, keyFile: keyFile}
		v.verify()
		v.client.CloseIdleConnections()
		t.Logf("round %d: killed after %v (workers gone %v later) with %d uploads in progress; restarted and checked %d blobs, %d manifests, %d tags, %d blob files in %v",
			round, delay.Round(time.Millisecond), restarted.Sub(killed).Round(time.Millisecond), v.sessions,
			v.blobsChecked, v.manifestsChecked, v.tagsChecked, v.files, time.Since(restarted).Round(time.Millisecond))
		if t.Failed() {
			t.Fatalf("round %d failed; berth log before the kill (tail):\n%s\nafter the restart:\n%s",
				round, crashTail(before, 4000), crashTail(b.Log(), 4000))
		}
	}
	for _, bad := range []string{"panic:", "internal error", "fatal error"} {
		if strings.Contains(b.Log(), bad) {
			t.Errorf("berth logged %q after the last restart:\n%s", bad, crashTail(b.Log(), 4000))
		}
	}
	// Not a failure, but worth knowing: what kills leave behind where nobody sees it.
	var temps, dirs int
	ents, _ := os.ReadDir(filepath.Join(b.Data, "uploads"))
	for _, e := range ents {
		if e.IsDir() {
			dirs++
		} else {
			temps++
		}
	}
	t.Logf("left in DATA/uploads after %d kills: %d upload session directories, %d other files (interrupted monolithic pushes)",
		led.stats.kills, dirs, temps)
	s := led.stats
	t.Logf("deletes: %s", led.del.summary())
	t.Logf("%d kills in %v: %d blobs acknowledged (%s), %d manifests and %d tag updates acknowledged; "+
		"%d uploads interrupted (%d in their final PUT): %d resumed (%d with bytes of an unacknowledged body kept), %d cleanly unknown (%d of them never finished); "+
		"unacknowledged at the kill: %d blobs (%d whole, %d absent), %d manifests (%d whole, %d absent)",
		s.kills, time.Since(began).Round(time.Millisecond), s.blobs, s.byHow(), s.manifests, s.tagPuts,
		s.interrupted, s.interruptedInPut, s.resumed, s.resumedPartial, s.unknown, s.unknownUnfinished,
		s.triedBlobs, s.triedBlobsPresent, s.triedBlobs-s.triedBlobsPresent,
		s.triedManifests, s.triedManifestsPresent, s.triedManifests-s.triedManifestsPresent)
}

// crashWorkers is what runs concurrently in a round, one goroutine each.
var crashWorkers = []string{"monolithic", "monolithic", "chunked", "chunked", "streamed", "streamed",
	"streamed-monolithic", "manifest", "manifest", "manifest", "delete"}

var (
	crashRepos = []string{"crash/alpha", "crash/beta", "crash/nested/gamma"}
	crashTags  = []string{"latest", "stable", "v1", "v2"}
)

const (
	crashMaxOps       = 400 // per worker and round, a bound should the kill come late
	crashManifestType = "application/vnd.oci.image.manifest.v1+json"
	crashConfigType   = "application/vnd.oci.image.config.v1+json"
	crashLayerType    = "application/vnd.oci.image.layer.v1.tar+gzip"
)

type crashBlobKey struct{ repo, dgst string }

type crashTagKey struct{ repo, tag string }

// crashTagPut is one request that set a tag: it may have taken effect at any moment between start and
// end (the kill, when it was not acknowledged).
type crashTagPut struct {
	dgst       string
	start, end time.Time
	acked      bool
}

// crashSession is an upload session in progress: what the server last acknowledged of it.
type crashSession struct {
	repo, how string
	loc       string // absolute URL of the session, as the server last gave it
	content   []byte
	dgst      string
	acked     int64 // bytes the server acknowledged with its Range header
	putSent   bool  // the final PUT was sent
}

type crashStats struct {
	kills, blobs, manifests, tagPuts                       int
	how                                                    map[string]int
	interrupted, interruptedInPut, resumed, resumedPartial int
	unknown, unknownUnfinished                             int
	triedBlobs, triedBlobsPresent                          int
	triedManifests, triedManifestsPresent                  int
}

func (s *crashStats) byHow() string {
	var parts []string
	for k, n := range s.how {
		parts = append(parts, fmt.Sprintf("%d %s", n, k))
	}
	slices.Sort(parts)
	return strings.Join(parts, ", ")
}

// crashLedger is what the workers know the server acknowledged, over all rounds.
type crashLedger struct {
	mu             sync.Mutex
	blobs          map[crashBlobKey]int64    // acknowledged (201): size
	blobList       map[string][]crashBlobKey // acknowledged, per repository, for manifests to reference
	triedBlobs     map[crashBlobKey]int64    // sent, not acknowledged
	manifests      map[crashBlobKey][]byte   // acknowledged
	triedManifests map[crashBlobKey][]byte   // sent, not acknowledged
	tagPuts        map[crashTagKey][]*crashTagPut
	sessions       map[*crashSession]bool
	repos          map[string]bool // every repository a request named
	seq            int
	stats          crashStats
	del            *crashDeletes // the delete worker's repository
}

func newCrashLedger() *crashLedger {
	return &crashLedger{
		blobs: map[crashBlobKey]int64{}, blobList: map[string][]crashBlobKey{}, triedBlobs: map[crashBlobKey]int64{},
		manifests: map[crashBlobKey][]byte{}, triedManifests: map[crashBlobKey][]byte{}, tagPuts: map[crashTagKey][]*crashTagPut{},
		sessions: map[*crashSession]bool{}, repos: map[string]bool{}, stats: crashStats{how: map[string]int{}},
		del: newCrashDeletes(),
	}
}

func (l *crashLedger) tryBlob(repo, d string, size int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.repos[repo] = true
	if _, ok := l.blobs[crashBlobKey{repo, d}]; !ok {
		l.triedBlobs[crashBlobKey{repo, d}] = size
	}
}

func (l *crashLedger) ackBlob(repo, d string, size int64, how string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := crashBlobKey{repo, d}
	delete(l.triedBlobs, k)
	if _, ok := l.blobs[k]; !ok {
		l.blobs[k] = size
		l.blobList[repo] = append(l.blobList[repo], k)
	}
	l.stats.blobs++
	l.stats.how[how]++
}

// pickBlobs returns up to n distinct acknowledged blobs of repo.
func (l *crashLedger) pickBlobs(rng *rand.Rand, repo string, n int) []crashBlobKey {
	l.mu.Lock()
	defer l.mu.Unlock()
	list := l.blobList[repo]
	var out []crashBlobKey
	for _, i := range rng.Perm(len(list)) {
		if len(out) == n {
			break
		}
		out = append(out, list[i])
	}
	return out
}

func (l *crashLedger) size(k crashBlobKey) int64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.blobs[k]
}

// pickOther returns an acknowledged blob of another repository than repo.
func (l *crashLedger) pickOther(rng *rand.Rand, repo string) (crashBlobKey, int64, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	from := crashRepos[rng.IntN(len(crashRepos))]
	if from == repo || len(l.blobList[from]) == 0 {
		return crashBlobKey{}, 0, false
	}
	k := l.blobList[from][rng.IntN(len(l.blobList[from]))]
	return k, l.blobs[k], true
}

func (l *crashLedger) addSession(s *crashSession) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.repos[s.repo] = true
	l.sessions[s] = true
}

func (l *crashLedger) progress(s *crashSession, loc string, acked int64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	s.loc, s.acked = loc, acked
}

func (l *crashLedger) putting(s *crashSession) {
	l.mu.Lock()
	s.putSent = true
	l.mu.Unlock()
	l.tryBlob(s.repo, s.dgst, int64(len(s.content)))
}

func (l *crashLedger) finished(s *crashSession) {
	l.mu.Lock()
	delete(l.sessions, s)
	l.mu.Unlock()
	l.ackBlob(s.repo, s.dgst, int64(len(s.content)), s.how)
}

func (l *crashLedger) next() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seq++
	return l.seq
}

func (l *crashLedger) startManifest(repo, d string, body []byte, tags []string) []*crashTagPut {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.repos[repo] = true
	if _, ok := l.manifests[crashBlobKey{repo, d}]; !ok {
		l.triedManifests[crashBlobKey{repo, d}] = body
	}
	var puts []*crashTagPut
	for _, tag := range tags {
		p := &crashTagPut{dgst: d, start: time.Now()}
		l.tagPuts[crashTagKey{repo, tag}] = append(l.tagPuts[crashTagKey{repo, tag}], p)
		puts = append(puts, p)
	}
	return puts
}

func (l *crashLedger) ackManifest(repo, d string, body []byte, puts []*crashTagPut) {
	now := time.Now()
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.triedManifests, crashBlobKey{repo, d})
	l.manifests[crashBlobKey{repo, d}] = body
	for _, p := range puts {
		p.end, p.acked = now, true
	}
	l.stats.manifests++
	l.stats.tagPuts += len(puts)
}

// settle closes the round: a tag update that was not acknowledged took effect before the kill or
// never.
func (l *crashLedger) settle(killed time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, puts := range l.tagPuts {
		for _, p := range puts {
			if p.end.IsZero() {
				p.end = killed
			}
		}
	}
}

// crashRun is one round of workers against one berth process.
type crashRun struct {
	t        *testing.T
	b        *berth
	led      *crashLedger
	round    int
	common   [][]byte
	client   *http.Client
	stopping atomic.Bool // set just before the kill: from then on, broken connections are expected
}

func crashClient() *http.Client {
	return &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{MaxIdleConnsPerHost: 64, DisableCompression: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
	}
}

// do sends a request; hdr is pairs of header names and values. length -1 streams the body.
func crashDo(c *http.Client, method, rawURL string, body io.Reader, length int64, hdr ...string) (*http.Response, []byte, error) {
	req, err := http.NewRequest(method, rawURL, body)
	if err != nil {
		return nil, nil, err
	}
	if body != nil {
		req.ContentLength = length
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, nil, err
	}
	return resp, b, nil
}

func (r *crashRun) url(path string) string { return r.b.URL() + path }

// broken handles a failed round trip: expected once the kill is under way, a failure before.
// It returns false: the worker stops.
func (r *crashRun) broken(what string, err error) bool {
	if !r.stopping.Load() {
		r.t.Errorf("round %d: %s: %v (berth was not being killed)", r.round, what, err)
	}
	return false
}

// expect fails the test when a live server answered something else than want.
func (r *crashRun) expect(what string, resp *http.Response, body []byte, want int) bool {
	if resp.StatusCode == want {
		return true
	}
	r.t.Errorf("round %d: %s: status %d, want %d: %s", r.round, what, resp.StatusCode, want, bytes.TrimSpace(body))
	return false
}

func (r *crashRun) work(kind string, rng *rand.Rand) {
	for i := 0; i < crashMaxOps && !r.stopping.Load(); i++ {
		repo := crashRepos[rng.IntN(len(crashRepos))]
		var ok bool
		switch kind {
		case "monolithic":
			if rng.IntN(6) == 0 {
				ok = r.mount(rng, repo)
			} else {
				ok = r.pushMonolithic(rng, repo, false)
			}
		case "streamed-monolithic":
			ok = r.pushMonolithic(rng, repo, true)
		case "chunked":
			ok = r.pushSession(rng, repo, false)
		case "streamed":
			ok = r.pushSession(rng, repo, true)
		case "manifest":
			// Manifests are cheap: a pause keeps them from swamping the checks, not from racing.
			time.Sleep(time.Duration(1+rng.IntN(4)) * time.Millisecond)
			ok = r.pushManifest(rng, repo)
		case "delete":
			time.Sleep(time.Duration(1+rng.IntN(4)) * time.Millisecond)
			ok = r.deleteStep(rng)
		}
		if !ok {
			return
		}
	}
}

// pushMonolithic pushes a blob with POST ?digest=, its body whole or streamed slowly.
func (r *crashRun) pushMonolithic(rng *rand.Rand, repo string, streamed bool) bool {
	var content []byte
	how := "monolithic"
	switch {
	case streamed:
		content, how = crashRandBytes(rng, 1<<20+rng.IntN(2<<20)), "streamed monolithic"
	case rng.IntN(8) == 0:
		content, how = r.common[rng.IntN(len(r.common))], "monolithic shared"
	default:
		content = crashRandBytes(rng, 1<<10+rng.IntN(255<<10))
	}
	d := crashDigest(content)
	if how == "monolithic" && rng.IntN(8) == 0 {
		d, how = crashDigestAs("sha512", content), "monolithic sha512"
	}
	size := int64(len(content))
	r.led.tryBlob(repo, d, size)
	var body io.Reader = bytes.NewReader(content)
	length := size
	if streamed {
		body, length = crashSlowly(content), -1
	}
	what := fmt.Sprintf("%s push of %s@%s", how, repo, d)
	resp, rb, err := crashDo(r.client, http.MethodPost, r.url("/v2/"+repo+"/blobs/uploads/?digest="+d), body, length,
		"Content-Type", "application/octet-stream")
	if err != nil {
		return r.broken(what, err)
	}
	if !r.expect(what, resp, rb, http.StatusCreated) {
		return false
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != d {
		r.t.Errorf("round %d: %s: Docker-Content-Digest %q", r.round, what, got)
		return false
	}
	r.led.ackBlob(repo, d, size, how)
	return true
}

// mount mounts a blob acknowledged in another repository.
func (r *crashRun) mount(rng *rand.Rand, repo string) bool {
	k, size, ok := r.led.pickOther(rng, repo)
	if !ok {
		return r.pushMonolithic(rng, repo, false)
	}
	r.led.tryBlob(repo, k.dgst, size)
	what := fmt.Sprintf("mount of %s@%s into %s", k.repo, k.dgst, repo)
	resp, rb, err := crashDo(r.client, http.MethodPost,
		r.url("/v2/"+repo+"/blobs/uploads/?mount="+k.dgst+"&from="+url.QueryEscape(k.repo)), nil, 0)
	if err != nil {
		return r.broken(what, err)
	}
	// 202 would mean that an acknowledged blob of the source is not there any more.
	if !r.expect(what, resp, rb, http.StatusCreated) {
		return false
	}
	r.led.ackBlob(repo, k.dgst, size, "mounted")
	return true
}

// pushSession pushes a blob through an upload session: chunks with Content-Range, or one or two
// slowly streamed bodies; the last part goes sometimes in the PUT that commits the upload.
func (r *crashRun) pushSession(rng *rand.Rand, repo string, streamed bool) bool {
	how, size := "chunked", 16<<10+rng.IntN(496<<10)
	if streamed {
		how, size = "streamed", 1<<20+rng.IntN(3<<20)
	}
	content := crashRandBytes(rng, size)
	d := crashDigest(content)
	if rng.IntN(8) == 0 { // committed by hashing the file again rather than with the running sha256
		d, how = crashDigestAs("sha512", content), how+" sha512"
	}
	what := fmt.Sprintf("%s upload of %s@%s (%d bytes)", how, repo, d, size)
	resp, rb, err := crashDo(r.client, http.MethodPost, r.url("/v2/"+repo+"/blobs/uploads/"), nil, 0)
	if err != nil {
		return r.broken(what+": POST", err)
	}
	if !r.expect(what+": POST", resp, rb, http.StatusAccepted) {
		return false
	}
	loc, err := crashResolve(r.b.URL(), resp.Header.Get("Location"))
	if err != nil {
		r.t.Errorf("round %d: %s: POST Location: %v", r.round, what, err)
		return false
	}
	s := &crashSession{repo: repo, how: how, loc: loc, content: content, dgst: d}
	r.led.addSession(s)

	parts := 2 + rng.IntN(4)
	if streamed {
		parts = 1 + rng.IntN(2)
	}
	cuts := crashCuts(rng, size, parts)
	lastInPut := rng.IntN(3) == 0
	off := 0
	for i, end := range cuts {
		if lastInPut && i == len(cuts)-1 {
			break
		}
		chunk := content[off:end]
		var resp *http.Response
		var rb []byte
		var err error
		if streamed {
			resp, rb, err = crashDo(r.client, http.MethodPatch, s.loc, crashSlowly(chunk), -1,
				"Content-Type", "application/octet-stream")
		} else {
			resp, rb, err = crashDo(r.client, http.MethodPatch, s.loc, bytes.NewReader(chunk), int64(len(chunk)),
				"Content-Type", "application/octet-stream", "Content-Range", fmt.Sprintf("%d-%d", off, end-1))
		}
		pw := fmt.Sprintf("%s: PATCH bytes %d-%d", what, off, end-1)
		if err != nil {
			return r.broken(pw, err)
		}
		if !r.expect(pw, resp, rb, http.StatusAccepted) {
			return false
		}
		if got, want := resp.Header.Get("Range"), fmt.Sprintf("0-%d", end-1); got != want {
			r.t.Errorf("round %d: %s: Range %q, want %q", r.round, pw, got, want)
			return false
		}
		loc, err := crashResolve(r.b.URL(), resp.Header.Get("Location"))
		if err != nil {
			r.t.Errorf("round %d: %s: Location: %v", r.round, pw, err)
			return false
		}
		r.led.progress(s, loc, int64(end))
		off = end
	}

	r.led.putting(s)
	var body io.Reader
	var length int64
	hdr := []string{}
	switch {
	case off < size && streamed: // a kill may land in the middle of the commit's body
		body, length = crashSlowly(content[off:]), -1
		hdr = append(hdr, "Content-Type", "application/octet-stream")
	case off < size:
		body, length = bytes.NewReader(content[off:]), int64(size-off)
		hdr = append(hdr, "Content-Type", "application/octet-stream", "Content-Range", fmt.Sprintf("%d-%d", off, size-1))
	}
	pw := fmt.Sprintf("%s: PUT with bytes %d-%d", what, off, size-1)
	resp, rb, err = crashDo(r.client, http.MethodPut, crashWithDigest(s.loc, d), body, length, hdr...)
	if err != nil {
		return r.broken(pw, err)
	}
	if !r.expect(pw, resp, rb, http.StatusCreated) {
		return false
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != d {
		r.t.Errorf("round %d: %s: Docker-Content-Digest %q", r.round, pw, got)
		return false
	}
	r.led.finished(s)
	return true
}

type crashDesc struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
}

type crashManifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType"`
	Config        crashDesc         `json:"config"`
	Layers        []crashDesc       `json:"layers"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// pushManifest pushes an image manifest of acknowledged blobs, by tag, by digest, or by digest with
// ?tag=, onto the few tags that all manifest workers share.
func (r *crashRun) pushManifest(rng *rand.Rand, repo string) bool {
	refs := r.led.pickBlobs(rng, repo, 1+rng.IntN(4))
	if len(refs) == 0 {
		return r.pushMonolithic(rng, repo, false)
	}
	m := crashManifest{
		SchemaVersion: 2, MediaType: crashManifestType,
		Config:      crashDesc{crashConfigType, refs[0].dgst, r.led.size(refs[0])},
		Layers:      []crashDesc{},
		Annotations: map[string]string{"org.example.crash": fmt.Sprintf("round %d, manifest %d", r.round, r.led.next())},
	}
	for _, k := range refs[1:] {
		m.Layers = append(m.Layers, crashDesc{crashLayerType, k.dgst, r.led.size(k)})
	}
	body, err := json.Marshal(m)
	if err != nil {
		r.t.Error(err)
		return false
	}
	d := crashDigest(body)
	var tags []string
	path := "/v2/" + repo + "/manifests/"
	switch rng.IntN(4) {
	case 0, 1:
		tags = []string{crashTags[rng.IntN(len(crashTags))]}
		path += tags[0]
	case 2:
		path += d
	case 3:
		p := rng.Perm(len(crashTags))
		tags = []string{crashTags[p[0]], crashTags[p[1]]}
		path += d + "?tag=" + tags[0] + "&tag=" + tags[1]
	}
	puts := r.led.startManifest(repo, d, body, tags)
	what := fmt.Sprintf("PUT %s (manifest %s)", path, d)
	resp, rb, err := crashDo(r.client, http.MethodPut, r.url(path), bytes.NewReader(body), int64(len(body)),
		"Content-Type", crashManifestType)
	if err != nil {
		return r.broken(what, err)
	}
	if !r.expect(what, resp, rb, http.StatusCreated) {
		return false
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != d {
		r.t.Errorf("round %d: %s: Docker-Content-Digest %q", r.round, what, got)
		return false
	}
	r.led.ackManifest(repo, d, body, puts)
	return true
}

// crashVerifier checks a restarted berth against the ledger.
type crashVerifier struct {
	t      *testing.T
	round  int
	base   string
	data   string
	led    *crashLedger
	client *http.Client
	rng    *rand.Rand
	seen   map[crashBlobKey]bool // blobs served whole and correct in this pass
	errs   int
	// keyFile is the encryption key when berth encrypts at rest: blob files are then checked
	// by decrypting them.
	keyFile string

	blobsChecked, manifestsChecked, tagsChecked, files, sessions int
}

func (v *crashVerifier) fail(format string, args ...any) {
	v.t.Helper()
	v.t.Errorf("round %d, after kill -9 and restart: "+format, append([]any{v.round}, args...)...)
	if v.errs++; v.errs >= 30 {
		v.t.Fatalf("round %d: too many failures, stopping", v.round)
	}
}

// get does a request that a live, restarted berth must answer.
func (v *crashVerifier) get(method, rawURL string, hdr ...string) (*http.Response, []byte) {
	v.t.Helper()
	if strings.HasPrefix(rawURL, "/") {
		rawURL = v.base + rawURL
	}
	resp, body, err := crashDo(v.client, method, rawURL, nil, 0, hdr...)
	if err != nil {
		v.t.Fatalf("round %d: %s %s after the restart: %v", v.round, method, rawURL, err)
	}
	return resp, body
}

func (v *crashVerifier) verify() {
	v.blobFiles()
	l := v.led
	// Workers are done: the ledger is ours alone until the next round.
	for _, k := range crashSortedKeys(l.blobs) {
		v.blob(k, l.blobs[k], true)
	}
	for _, k := range crashSortedKeys(l.triedBlobs) {
		if _, ok := l.blobs[k]; ok {
			continue
		}
		l.stats.triedBlobs++
		if v.blob(k, l.triedBlobs[k], false) {
			l.stats.triedBlobsPresent++
			l.blobs[k] = l.triedBlobs[k]
			l.blobList[k.repo] = append(l.blobList[k.repo], k)
		}
		delete(l.triedBlobs, k)
	}
	for _, k := range crashSortedKeys(l.manifests) {
		v.manifest(k, l.manifests[k], true)
	}
	for _, k := range crashSortedKeys(l.triedManifests) {
		l.stats.triedManifests++
		if v.manifest(k, l.triedManifests[k], false) {
			l.stats.triedManifestsPresent++
			l.manifests[k] = l.triedManifests[k]
		}
		delete(l.triedManifests, k)
	}
	v.catalogAndTags()
	v.deletes()
	var open []*crashSession
	for s := range l.sessions {
		open = append(open, s)
	}
	slices.SortFunc(open, func(a, b *crashSession) int { return strings.Compare(a.loc, b.loc) })
	v.sessions = len(open)
	for _, s := range open {
		l.stats.interrupted++
		if s.putSent {
			l.stats.interruptedInPut++
		}
		v.resume(s)
		delete(l.sessions, s)
	}
}

// blobFiles hashes every file in DATA/blobs: each must hold what its name says (decrypted, when
// berth encrypts at rest).
func (v *crashVerifier) blobFiles() {
	open := func(path, _ string) (io.ReadCloser, error) { return os.Open(path) }
	if v.keyFile != "" {
		open = v.decrypter()
	}
	root := filepath.Join(v.data, "blobs")
	err := filepath.WalkDir(root, func(path string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if de.IsDir() {
			return nil
		}
		v.files++
		rel, _ := filepath.Rel(root, path)
		parts := strings.Split(rel, string(filepath.Separator))
		var h hash.Hash
		if len(parts) == 3 {
			switch parts[0] {
			case "sha256":
				h = sha256.New()
			case "sha512":
				h = sha512.New()
			}
		}
		if h == nil || len(parts[2]) < 2 || parts[1] != parts[2][:2] || !de.Type().IsRegular() {
			v.fail("stray file in the blob store: blobs/%s", rel)
			return nil
		}
		f, err := open(path, parts[0]+":"+parts[2])
		if err != nil {
			v.fail("CORRUPT blob file blobs/%s: %v", rel, err)
			return nil
		}
		defer f.Close()
		n, err := io.Copy(h, f)
		if err != nil {
			v.fail("CORRUPT blob file blobs/%s: after %d bytes: %v", rel, n, err)
		} else if got := hex.EncodeToString(h.Sum(nil)); got != parts[2] {
			v.fail("CORRUPT blob file blobs/%s: its %d bytes hash to %s:%s", rel, n, parts[0], got)
		}
		return nil
	})
	if err != nil {
		v.fail("walking %s: %v", root, err)
	}
}

// blob checks blob k of size bytes: acknowledged, it must be served whole; otherwise it may also
// be absent, but never partial. It reports whether the blob is there.
func (v *crashVerifier) blob(k crashBlobKey, size int64, acked bool) bool {
	v.t.Helper()
	v.blobsChecked++
	name := k.repo + "@" + k.dgst
	state := "unacknowledged"
	if acked {
		state = "acknowledged"
	}
	path := "/v2/" + k.repo + "/blobs/" + k.dgst
	head, _ := v.get(http.MethodHead, path)
	resp, body := v.get(http.MethodGet, path)
	if head.StatusCode == http.StatusNotFound && resp.StatusCode == http.StatusNotFound {
		if acked {
			v.fail("LOST blob %s: acknowledged with 201 (%d bytes), now 404: %s", name, size, bytes.TrimSpace(body))
		} else if code := crashErrorCode(body); code != "BLOB_UNKNOWN" {
			v.fail("blob %s: 404 with error code %q, want BLOB_UNKNOWN", name, code)
		}
		return false
	}
	if head.StatusCode != resp.StatusCode {
		v.fail("HALF-VISIBLE %s blob %s: HEAD answers %d, GET %d", state, name, head.StatusCode, resp.StatusCode)
		return false
	}
	if resp.StatusCode != http.StatusOK {
		v.fail("%s blob %s: GET answers %d: %s", state, name, resp.StatusCode, bytes.TrimSpace(body))
		return false
	}
	ok := true
	if cl := head.Header.Get("Content-Length"); cl != strconv.FormatInt(size, 10) {
		v.fail("CORRUPT %s blob %s: HEAD Content-Length %s, pushed %d bytes", state, name, cl, size)
		ok = false
	}
	for _, h := range []http.Header{head.Header, resp.Header} {
		if got := h.Get("Docker-Content-Digest"); got != k.dgst {
			v.fail("%s blob %s: Docker-Content-Digest %q", state, name, got)
			ok = false
		}
	}
	alg, _, _ := strings.Cut(k.dgst, ":")
	if got := crashDigestAs(alg, body); int64(len(body)) != size || got != k.dgst {
		v.fail("CORRUPT %s blob %s: GET serves %d bytes hashing to %s, pushed %d bytes", state, name, len(body), got, size)
		ok = false
	}
	if ok {
		v.seen[k] = true
	}
	return ok
}

// manifest checks manifest k: acknowledged, it must be served byte for byte; otherwise it may
// also be absent. It reports whether the manifest is there.
func (v *crashVerifier) manifest(k crashBlobKey, want []byte, acked bool) bool {
	v.manifestsChecked++
	name := k.repo + "@" + k.dgst
	resp, body := v.get(http.MethodGet, "/v2/"+k.repo+"/manifests/"+k.dgst, "Accept", crashManifestType)
	if resp.StatusCode == http.StatusNotFound {
		if acked {
			v.fail("LOST manifest %s: acknowledged with 201, now 404: %s", name, bytes.TrimSpace(body))
		} else if code := crashErrorCode(body); code != "MANIFEST_UNKNOWN" {
			v.fail("manifest %s: 404 with error code %q, want MANIFEST_UNKNOWN", name, code)
		}
		return false
	}
	if resp.StatusCode != http.StatusOK {
		v.fail("manifest %s: GET answers %d: %s", name, resp.StatusCode, bytes.TrimSpace(body))
		return false
	}
	if !bytes.Equal(body, want) {
		v.fail("CORRUPT manifest %s: GET serves %d bytes hashing to %s, pushed %d bytes", name, len(body), crashDigest(body), len(want))
		return false
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != k.dgst {
		v.fail("manifest %s: Docker-Content-Digest %q", name, got)
	}
	head, _ := v.get(http.MethodHead, "/v2/"+k.repo+"/manifests/"+k.dgst, "Accept", crashManifestType)
	if head.StatusCode != http.StatusOK || head.Header.Get("Content-Length") != strconv.Itoa(len(want)) ||
		head.Header.Get("Docker-Content-Digest") != k.dgst {
		v.fail("HALF-VISIBLE manifest %s: GET serves it, HEAD answers %d, Content-Length %s, Docker-Content-Digest %s",
			name, head.StatusCode, head.Header.Get("Content-Length"), head.Header.Get("Docker-Content-Digest"))
	}
	return true
}

// catalogAndTags checks the catalog, every tag list and every tag.
func (v *crashVerifier) catalogAndTags() {
	l := v.led
	resp, body := v.get(http.MethodGet, "/v2/_catalog")
	var cat struct {
		Repositories []string `json:"repositories"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &cat) != nil {
		v.fail("GET /v2/_catalog: %d %s", resp.StatusCode, body)
		return
	}
	if !slices.IsSorted(cat.Repositories) || len(slices.Compact(slices.Clone(cat.Repositories))) != len(cat.Repositories) {
		v.fail("catalog is not sorted and unique: %q", cat.Repositories)
	}
	listed := map[string]bool{}
	for _, repo := range cat.Repositories {
		listed[repo] = true
		if !l.repos[repo] {
			v.fail("catalog lists %q, which no request named", repo)
		}
	}
	for k := range l.blobs {
		if !listed[k.repo] {
			v.fail("catalog %q lacks %s, which has acknowledged blob %s", cat.Repositories, k.repo, k.dgst)
			break
		}
	}
	for k := range l.manifests {
		if !listed[k.repo] {
			v.fail("catalog %q lacks %s, which has acknowledged manifest %s", cat.Repositories, k.repo, k.dgst)
			break
		}
	}
	for _, repo := range crashRepos {
		tags := map[string]bool{}
		resp, body := v.get(http.MethodGet, "/v2/"+repo+"/tags/list")
		switch {
		case !listed[repo]:
			if resp.StatusCode != http.StatusNotFound {
				v.fail("repository %s is not in the catalog, yet its tag list answers %d: %s", repo, resp.StatusCode, body)
			}
		case resp.StatusCode != http.StatusOK:
			v.fail("repository %s is in the catalog, yet its tag list answers %d: %s", repo, resp.StatusCode, body)
		default:
			var tl struct {
				Name string   `json:"name"`
				Tags []string `json:"tags"`
			}
			if err := json.Unmarshal(body, &tl); err != nil || tl.Name != repo {
				v.fail("tag list of %s: %v, %s", repo, err, body)
			}
			if !slices.IsSorted(tl.Tags) || len(slices.Compact(slices.Clone(tl.Tags))) != len(tl.Tags) {
				v.fail("tag list of %s is not sorted and unique: %q", repo, tl.Tags)
			}
			for _, tag := range tl.Tags {
				tags[tag] = true
			}
		}
		for tag := range tags {
			if !slices.Contains(crashTags, tag) {
				v.fail("tag list of %s has %q, which no request set", repo, tag)
			}
		}
		for _, tag := range crashTags {
			v.tag(repo, tag, tags[tag])
		}
	}
}

// tag checks one tag: listed, it must resolve to a manifest one of its updates could have left
// (not one that an acknowledged later update replaced), which parses and whose blobs are all
// served whole; unlisted, no update of it may have been acknowledged and it must not resolve.
func (v *crashVerifier) tag(repo, tag string, listed bool) {
	puts := v.led.tagPuts[crashTagKey{repo, tag}]
	ref := repo + ":" + tag
	resp, body := v.get(http.MethodGet, "/v2/"+repo+"/manifests/"+tag, "Accept", crashManifestType)
	if !listed {
		for _, p := range puts {
			if p.acked {
				v.fail("LOST tag %s: set to %s with 201, now not in the tag list (GET answers %d)", ref, p.dgst, resp.StatusCode)
				return
			}
		}
		if resp.StatusCode != http.StatusNotFound {
			v.fail("HALF-VISIBLE tag %s: not in the tag list, yet GET answers %d", ref, resp.StatusCode)
		}
		return
	}
	v.tagsChecked++
	if resp.StatusCode != http.StatusOK {
		v.fail("DANGLING tag %s: listed, but GET answers %d: %s", ref, resp.StatusCode, bytes.TrimSpace(body))
		return
	}
	d := crashDigest(body)
	if got := resp.Header.Get("Docker-Content-Digest"); got != d {
		v.fail("CORRUPT tag %s: Docker-Content-Digest %s, but the body hashes to %s", ref, got, d)
	}
	if !crashTagValueOK(puts, d) {
		var hist []string
		for _, p := range puts[max(0, len(puts)-6):] {
			hist = append(hist, fmt.Sprintf("%s acked=%v", p.dgst, p.acked))
		}
		if len(puts) > 6 {
			hist = append([]string{fmt.Sprintf("%d earlier", len(puts)-6)}, hist...)
		}
		v.fail("STALE tag %s: resolves to %s, which no update could have left (updates, oldest first: %s)", ref, d, strings.Join(hist, "; "))
	}
	if r2, _ := v.get(http.MethodGet, "/v2/"+repo+"/manifests/"+d, "Accept", crashManifestType); r2.StatusCode != http.StatusOK {
		v.fail("DANGLING tag %s: resolves to %s, whose GET by digest answers %d", ref, d, r2.StatusCode)
	}
	var m crashManifest
	if err := json.Unmarshal(body, &m); err != nil || m.SchemaVersion != 2 || m.MediaType != crashManifestType || m.Config.Digest == "" {
		v.fail("CORRUPT tag %s: manifest %s does not parse as an OCI image manifest (%v): %.200s", ref, d, err, body)
		return
	}
	for _, desc := range append([]crashDesc{m.Config}, m.Layers...) {
		k := crashBlobKey{repo, desc.Digest}
		if v.seen[k] {
			continue
		}
		if !v.blob(k, desc.Size, true) {
			v.fail("BROKEN tag %s: manifest %s references blob %s (%d bytes), which is not served whole", ref, d, desc.Digest, desc.Size)
		}
	}
}

// crashTagValueOK reports whether a tag may hold d after its updates puts: some update set d and no
// acknowledged update started after it had ended.
func crashTagValueOK(puts []*crashTagPut, d string) bool {
	for _, p := range puts {
		if p.dgst != d {
			continue
		}
		superseded := false
		for _, q := range puts {
			if q.acked && q.start.After(p.end) {
				superseded = true
				break
			}
		}
		if !superseded {
			return true
		}
	}
	return false
}

// resume checks an upload session that the kill interrupted: it is either cleanly unknown, or its
// status says how much the registry kept (at least what it acknowledged), from where it resumes to
// a blob with the right content.
func (v *crashVerifier) resume(s *crashSession) {
	l := v.led
	size := int64(len(s.content))
	name := fmt.Sprintf("%s upload of %s@%s (%d bytes, %d acknowledged, final PUT sent: %v) at %s",
		s.how, s.repo, s.dgst, size, s.acked, s.putSent, s.loc)
	resp, body := v.get(http.MethodGet, s.loc)
	switch resp.StatusCode {
	case http.StatusNotFound:
		if code := crashErrorCode(body); code != "BLOB_UPLOAD_UNKNOWN" {
			v.fail("%s: 404 with error code %q, want BLOB_UPLOAD_UNKNOWN", name, code)
		}
		l.stats.unknown++
		if !s.putSent {
			l.stats.unknownUnfinished++
		}
		return
	case http.StatusNoContent:
	default:
		v.fail("UNRESUMABLE %s: status answers %d, want 204 or 404: %s", name, resp.StatusCode, bytes.TrimSpace(body))
		return
	}
	loc, err := crashResolve(v.base, resp.Header.Get("Location"))
	if err != nil {
		v.fail("UNRESUMABLE %s: status has Location %q: %v", name, resp.Header.Get("Location"), err)
		return
	}
	rg := resp.Header.Get("Range")
	end, ok := crashParseRange(rg)
	if !ok {
		v.fail("UNRESUMABLE %s: status has Range %q", name, rg)
		return
	}
	// "0-0" is what an empty upload and a one-byte upload both answer.
	offsets := []int64{end + 1}
	if end == 0 {
		offsets = []int64{0, 1}
	}
	for i, off := range offsets {
		if off < s.acked {
			if i == len(offsets)-1 {
				v.fail("LOST BYTES in %s: acknowledged %d bytes before the kill, has %d after (Range %q)", name, s.acked, off, rg)
				return
			}
			continue
		}
		if off > size {
			v.fail("CORRUPT %s: Range %q says it has %d bytes, only %d were ever sent", name, rg, off, size)
			return
		}
		inPut := off < size && v.rng.IntN(2) == 0
		if off < size && !inPut {
			resp, body := v.send(http.MethodPatch, loc, s.content[off:], "Content-Range", fmt.Sprintf("%d-%d", off, size-1))
			if resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && i < len(offsets)-1 {
				continue
			}
			if resp.StatusCode != http.StatusAccepted {
				v.fail("UNRESUMABLE %s: PATCH from offset %d (Range was %q) answers %d: %s", name, off, rg, resp.StatusCode, bytes.TrimSpace(body))
				return
			}
			if got, want := resp.Header.Get("Range"), fmt.Sprintf("0-%d", size-1); got != want {
				v.fail("%s: resumed PATCH answers Range %q, want %q", name, got, want)
			}
			if loc, err = crashResolve(v.base, resp.Header.Get("Location")); err != nil {
				v.fail("%s: resumed PATCH Location: %v", name, err)
				return
			}
		}
		var rest []byte
		var hdr []string
		if inPut {
			rest = s.content[off:]
			hdr = []string{"Content-Range", fmt.Sprintf("%d-%d", off, size-1)}
		}
		resp, body := v.send(http.MethodPut, crashWithDigest(loc, s.dgst), rest, hdr...)
		if resp.StatusCode == http.StatusRequestedRangeNotSatisfiable && inPut && i < len(offsets)-1 {
			continue
		}
		if resp.StatusCode != http.StatusCreated {
			why := ""
			if crashErrorCode(body) == "DIGEST_INVALID" {
				why = " (the bytes the registry kept before the kill are not the ones sent)"
			}
			v.fail("UNRESUMABLE %s: PUT after resuming from offset %d answers %d%s: %s", name, off, resp.StatusCode, why, bytes.TrimSpace(body))
			return
		}
		l.stats.resumed++
		if off > s.acked {
			l.stats.resumedPartial++
		}
		k := crashBlobKey{s.repo, s.dgst}
		delete(v.seen, k)
		if v.blob(k, size, true) {
			if _, ok := l.blobs[k]; !ok {
				l.blobs[k] = size
				l.blobList[k.repo] = append(l.blobList[k.repo], k)
			}
			delete(l.triedBlobs, k)
			l.stats.blobs++
			l.stats.how["resumed after the kill"]++
		}
		return
	}
}

// do1 sends body (may be empty) whole to a live berth.
func (v *crashVerifier) send(method, rawURL string, body []byte, hdr ...string) (*http.Response, []byte) {
	v.t.Helper()
	var rd io.Reader
	if len(body) > 0 {
		rd = bytes.NewReader(body)
		hdr = append(hdr, "Content-Type", "application/octet-stream")
	}
	resp, rb, err := crashDo(v.client, method, rawURL, rd, int64(len(body)), hdr...)
	if err != nil {
		v.t.Fatalf("round %d: %s %s after the restart: %v", v.round, method, rawURL, err)
	}
	return resp, rb
}

// crashSlowReader hands out its bytes in small pieces with pauses, so that a request body is still
// being sent when the kill comes.
type crashSlowReader struct {
	b     []byte
	piece int
	pause time.Duration
}

func crashSlowly(b []byte) io.Reader {
	return &crashSlowReader{b: b, piece: 64 << 10, pause: 8 * time.Millisecond}
}

func (s *crashSlowReader) Read(p []byte) (int, error) {
	if len(s.b) == 0 {
		return 0, io.EOF
	}
	time.Sleep(s.pause)
	n := copy(p, s.b[:min(len(s.b), s.piece)])
	s.b = s.b[n:]
	return n, nil
}

func crashRandBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, (n+7)&^7)
	for i := 0; i < len(b); i += 8 {
		binary.LittleEndian.PutUint64(b[i:], rng.Uint64())
	}
	return b[:n]
}

func crashDigest(b []byte) string { return crashDigestAs("sha256", b) }

func crashDigestAs(alg string, b []byte) string {
	if alg == "sha512" {
		sum := sha512.Sum512(b)
		return "sha512:" + hex.EncodeToString(sum[:])
	}
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// cutPoints splits n bytes into parts non-empty pieces and returns where each ends.
func crashCuts(rng *rand.Rand, n, parts int) []int {
	cuts := map[int]bool{n: true}
	for len(cuts) < parts {
		cuts[1+rng.IntN(n-1)] = true
	}
	var out []int
	for c := range cuts {
		out = append(out, c)
	}
	slices.Sort(out)
	return out
}

func crashResolve(base, loc string) (string, error) {
	if loc == "" {
		return "", fmt.Errorf("no Location")
	}
	b, err := url.Parse(base)
	if err != nil {
		return "", err
	}
	u, err := url.Parse(loc)
	if err != nil {
		return "", err
	}
	return b.ResolveReference(u).String(), nil
}

func crashWithDigest(loc, d string) string {
	u, err := url.Parse(loc)
	if err != nil {
		return loc
	}
	q := u.Query()
	q.Set("digest", d)
	u.RawQuery = q.Encode()
	return u.String()
}

// parseRange parses an upload's "0-<last>" Range header.
func crashParseRange(s string) (int64, bool) {
	a, b, ok := strings.Cut(s, "-")
	if !ok || a != "0" {
		return 0, false
	}
	end, err := strconv.ParseInt(b, 10, 64)
	return end, err == nil && end >= 0
}

func crashErrorCode(body []byte) string {
	var e struct {
		Errors []struct {
			Code string `json:"code"`
		} `json:"errors"`
	}
	if json.Unmarshal(body, &e) != nil || len(e.Errors) == 0 {
		return ""
	}
	return e.Errors[0].Code
}

func crashSortedKeys[V any](m map[crashBlobKey]V) []crashBlobKey {
	keys := make([]crashBlobKey, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b crashBlobKey) int {
		if c := strings.Compare(a.repo, b.repo); c != 0 {
			return c
		}
		return strings.Compare(a.dgst, b.dgst)
	})
	return keys
}

func crashTail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
