package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth/berth/internal/hubemu"
)

// The soak's load: workers that run client workflows as registry clients do them (a ping that
// answers 401, a token request with the robot's Basic credentials, then the requests with the
// token), every request paced to the target rate. See soak.go.

// Workflow kinds, in the order of the report.
const (
	wfPush = iota
	wfDelete
	wfPull
	wfWarm
	wfCold
	wfKinds
)

var wfNames = [wfKinds]string{"push", "delete", "pull", "proxy warm", "proxy cold"}

// pacer hands out one permit per interval: the target rate of requests, shared by every worker.
// A worker that falls behind does not earn a burst to catch up with (at most 100 ms' worth).
type pacer struct {
	mu       sync.Mutex
	next     time.Time
	interval time.Duration
}

func newPacer(rate int) *pacer { return &pacer{interval: time.Second / time.Duration(rate)} }

func (p *pacer) wait(ctx context.Context) error {
	p.mu.Lock()
	now := time.Now()
	if p.next.Before(now.Add(-100 * time.Millisecond)) {
		p.next = now
	}
	at := p.next
	p.next = p.next.Add(p.interval)
	p.mu.Unlock()
	if d := time.Until(at); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

// stored is an image the soak pushed and has not deleted yet.
type stored struct {
	repo, tag, digest string
	layer             blob
}

// soakLoad is the state the workers share.
type soakLoad struct {
	base           string // berth, http://127.0.0.1:PORT
	robot, secret  string
	hub            *hubemu.Hub
	config         blob // the config every pushed image shares (a common base)
	pace           *pacer
	keep           int // manifests kept: each push beyond deletes the oldest
	warm           []hubemu.Image
	coldRepos, seq atomic.Int64

	mu    sync.Mutex
	store []stored // oldest first

	requests atomic.Int64          // HTTP requests to berth, done
	runs     [wfKinds]atomic.Int64 // workflows completed
	fails    [wfKinds]atomic.Int64 // workflows that failed
	errMu    sync.Mutex
	errFirst []string // the first distinct errors
}

// soakRepos is how many repositories the pushes spread over.
const soakRepos = 16

func (l *soakLoad) fail(kind int, err error) {
	l.fails[kind].Add(1)
	l.errMu.Lock()
	defer l.errMu.Unlock()
	if len(l.errFirst) < 20 {
		l.errFirst = append(l.errFirst, fmt.Sprintf("%s: %v", wfNames[kind], err))
	}
}

// errorCount is every failed workflow.
func (l *soakLoad) errorCount() int64 {
	var n int64
	for i := range l.fails {
		n += l.fails[i].Load()
	}
	return n
}

// worker runs workflows until ctx ends. Its client keeps connections alive, as a long-running
// client does; one workflow in ten starts on fresh connections, as a new client process would.
func (l *soakLoad) worker(ctx context.Context, id int) {
	rng := rand.New(rand.NewPCG(uint64(id), 42))
	c := newClient(4)
	defer c.CloseIdleConnections()
	for ctx.Err() == nil {
		if rng.IntN(10) == 0 {
			c.CloseIdleConnections()
		}
		// Weights: pushes (each followed by a delete once the store is full), pulls of pushed
		// images, warm pull-through pulls, and now and then a cold one (a new upstream tag).
		var kind int
		switch r := rng.IntN(100); {
		case r < 20:
			kind = wfPush
		case r < 65:
			kind = wfPull
		case r < 97:
			kind = wfWarm
		default:
			kind = wfCold
		}
		var err error
		switch kind {
		case wfPush:
			err = l.push(ctx, c, rng)
		case wfPull:
			err = l.pull(ctx, c, rng)
		case wfWarm:
			err = l.proxyPull(ctx, c, l.warm[rng.IntN(len(l.warm))])
		case wfCold:
			err = l.cold(ctx, c, rng)
		}
		if ctx.Err() != nil {
			return // cut by the end of the run: neither a success nor a failure
		}
		if err != nil {
			l.fail(kind, err)
		} else {
			l.runs[kind].Add(1)
		}
		if kind == wfPush && err == nil {
			if old, ok := l.oldest(); ok {
				if err := l.remove(ctx, c, old); err != nil && ctx.Err() == nil {
					l.fail(wfDelete, err)
				} else if err == nil {
					l.runs[wfDelete].Add(1)
				}
			}
		}
	}
}

// oldest takes the oldest stored image when more than keep are stored.
func (l *soakLoad) oldest() (stored, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.store) <= l.keep {
		return stored{}, false
	}
	s := l.store[0]
	l.store = l.store[1:]
	return s, true
}

// recent picks a stored image among the newest half: those are deleted only after keep/2 more
// pushes, so a pull never races its image's delete.
func (l *soakLoad) recent(rng *rand.Rand) (stored, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := len(l.store)
	if n == 0 {
		return stored{}, false
	}
	half := max(n/2, 1)
	return l.store[n-1-rng.IntN(half)], true
}

// do sends one paced request to berth and checks its status.
func (l *soakLoad) do(ctx context.Context, c *http.Client, method, target, auth string, body []byte, hdr map[string]string, want int) (*http.Response, []byte, error) {
	if err := l.pace.wait(ctx); err != nil {
		return nil, nil, err
	}
	var rd io.Reader = http.NoBody
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, target, rd)
	if err != nil {
		return nil, nil, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	l.requests.Add(1)
	if err != nil {
		return nil, nil, err
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s: reading the body: %w", method, target, err)
	}
	if resp.StatusCode != want {
		return nil, nil, fmt.Errorf("%s %s: status %d, want %d: %.200s", method, target, resp.StatusCode, want, bytes.TrimSpace(data))
	}
	return resp, data, nil
}

// login is what a client does before its first request to a repository: /v2/ answers 401 with
// a challenge, then the token endpoint gives a token for scope in exchange for the robot's
// Basic credentials. It returns the Authorization header for the requests that follow.
func (l *soakLoad) login(ctx context.Context, c *http.Client, scope string) (string, error) {
	resp, _, err := l.do(ctx, c, http.MethodGet, l.base+"/v2/", "", nil, nil, http.StatusUnauthorized)
	if err != nil {
		return "", err
	}
	if resp.Header.Get("WWW-Authenticate") == "" {
		return "", errors.New("GET /v2/: 401 without a challenge")
	}
	q := url.Values{"service": {"berth"}, "scope": {scope}}
	basic := (&http.Request{Header: http.Header{}})
	basic.SetBasicAuth(l.robot, l.secret)
	_, data, err := l.do(ctx, c, http.MethodGet, l.base+"/token?"+q.Encode(), basic.Header.Get("Authorization"), nil, nil, http.StatusOK)
	if err != nil {
		return "", err
	}
	var tok struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(data, &tok); err != nil || tok.Token == "" {
		return "", fmt.Errorf("token for %s: %v", scope, err)
	}
	return "Bearer " + tok.Token, nil
}

// push pushes a new image (the shared config, a new small layer) as crane does: HEAD each blob,
// upload the missing ones (POST, PUT ?digest= with the body), PUT the manifest by tag.
func (l *soakLoad) push(ctx context.Context, c *http.Client, rng *rand.Rand) error {
	n := l.seq.Add(1)
	repo := fmt.Sprintf("soak/app-%d", n%soakRepos)
	tag := fmt.Sprintf("t%d", n)
	layer := make([]byte, 1024+rng.IntN(3072))
	for i := range layer {
		layer[i] = byte(rng.Uint32())
	}
	lb := newBlob(layer)
	auth, err := l.login(ctx, c, "repository:"+repo+":pull,push")
	if err != nil {
		return err
	}
	for _, b := range []blob{l.config, lb} {
		resp, err := l.headBlob(ctx, c, repo, b.digest, auth)
		if err != nil {
			return err
		}
		if resp == http.StatusOK {
			continue
		}
		r, _, err := l.do(ctx, c, http.MethodPost, l.base+"/v2/"+repo+"/blobs/uploads/", auth, nil, nil, http.StatusAccepted)
		if err != nil {
			return err
		}
		loc, err := r.Location()
		if err != nil {
			return fmt.Errorf("POST upload: %w", err)
		}
		q := loc.Query()
		q.Set("digest", b.digest)
		loc.RawQuery = q.Encode()
		if _, _, err := l.do(ctx, c, http.MethodPut, loc.String(), auth, b.data,
			map[string]string{"Content-Type": "application/octet-stream"}, http.StatusCreated); err != nil {
			return err
		}
	}
	type desc struct {
		MediaType string `json:"mediaType"`
		Digest    string `json:"digest"`
		Size      int    `json:"size"`
	}
	man, _ := json.Marshal(map[string]any{
		"schemaVersion": 2,
		"mediaType":     mtManifest,
		"config":        desc{mtConfig, l.config.digest, len(l.config.data)},
		"layers":        []desc{{mtLayer, lb.digest, len(lb.data)}},
	})
	mb := newBlob(man)
	r, _, err := l.do(ctx, c, http.MethodPut, l.base+"/v2/"+repo+"/manifests/"+tag, auth, man,
		map[string]string{"Content-Type": mtManifest}, http.StatusCreated)
	if err != nil {
		return err
	}
	if got := r.Header.Get("Docker-Content-Digest"); got != mb.digest {
		return fmt.Errorf("PUT manifest %s:%s: digest %q, want %s", repo, tag, got, mb.digest)
	}
	l.mu.Lock()
	l.store = append(l.store, stored{repo: repo, tag: tag, digest: mb.digest, layer: lb})
	l.mu.Unlock()
	return nil
}

// headBlob answers 200 or 404 (anything else is an error).
func (l *soakLoad) headBlob(ctx context.Context, c *http.Client, repo, d, auth string) (int, error) {
	if err := l.pace.wait(ctx); err != nil {
		return 0, err
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodHead, l.base+"/v2/"+repo+"/blobs/"+d, nil)
	req.Header.Set("Authorization", auth)
	resp, err := c.Do(req)
	l.requests.Add(1)
	if err != nil {
		return 0, err
	}
	drain(resp.Body)
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNotFound {
		return 0, fmt.Errorf("HEAD blob %s@%s: status %d", repo, d, resp.StatusCode)
	}
	return resp.StatusCode, nil
}

// remove deletes an image as `crane delete` and `regctl` do: the manifest by digest (its tag
// goes with it), then the blob only it used, so that what is stored stays level.
func (l *soakLoad) remove(ctx context.Context, c *http.Client, s stored) error {
	auth, err := l.login(ctx, c, "repository:"+s.repo+":delete")
	if err != nil {
		return err
	}
	if _, _, err := l.do(ctx, c, http.MethodDelete, l.base+"/v2/"+s.repo+"/manifests/"+s.digest, auth, nil, nil, http.StatusAccepted); err != nil {
		return err
	}
	_, _, err = l.do(ctx, c, http.MethodDelete, l.base+"/v2/"+s.repo+"/blobs/"+s.layer.digest, auth, nil, nil, http.StatusAccepted)
	return err
}

// pull pulls a pushed image by tag, checking the manifest's digest and every blob's content.
func (l *soakLoad) pull(ctx context.Context, c *http.Client, rng *rand.Rand) error {
	s, ok := l.recent(rng)
	if !ok {
		return l.proxyPull(ctx, c, l.warm[0]) // nothing pushed yet: the first second of the run
	}
	auth, err := l.login(ctx, c, "repository:"+s.repo+":pull")
	if err != nil {
		return err
	}
	r, _, err := l.do(ctx, c, http.MethodGet, l.base+"/v2/"+s.repo+"/manifests/"+s.tag, auth, nil,
		map[string]string{"Accept": acceptAll}, http.StatusOK)
	if err != nil {
		return err
	}
	if got := r.Header.Get("Docker-Content-Digest"); got != s.digest {
		return fmt.Errorf("GET %s:%s: digest %q, want %s", s.repo, s.tag, got, s.digest)
	}
	for _, b := range []blob{l.config, s.layer} {
		if err := l.getBlob(ctx, c, s.repo, b.digest, auth); err != nil {
			return err
		}
	}
	return nil
}

// getBlob GETs a blob and checks its content against its digest.
func (l *soakLoad) getBlob(ctx context.Context, c *http.Client, repo, d, auth string) error {
	_, data, err := l.do(ctx, c, http.MethodGet, l.base+"/v2/"+repo+"/blobs/"+d, auth, nil, nil, http.StatusOK)
	if err != nil {
		return err
	}
	if got := sha256Digest(data); got != d {
		return fmt.Errorf("GET blob %s@%s: content has digest %s", repo, d, got)
	}
	return nil
}

// proxyPull pulls an upstream image through berth's docker-hub rule, as
// docker-hub/<upstream name>:<tag>.
func (l *soakLoad) proxyPull(ctx context.Context, c *http.Client, img hubemu.Image) error {
	repo := proxyPrefix + "/" + img.Repo
	auth, err := l.login(ctx, c, "repository:"+repo+":pull")
	if err != nil {
		return err
	}
	r, _, err := l.do(ctx, c, http.MethodGet, l.base+"/v2/"+repo+"/manifests/"+img.Tag, auth, nil,
		map[string]string{"Accept": acceptAll}, http.StatusOK)
	if err != nil {
		return err
	}
	if got := r.Header.Get("Docker-Content-Digest"); got != img.Digest {
		return fmt.Errorf("GET %s:%s: digest %q, want %s", repo, img.Tag, got, img.Digest)
	}
	for _, d := range append([]string{img.Config}, img.Layers...) {
		if err := l.getBlob(ctx, c, repo, d, auth); err != nil {
			return err
		}
	}
	return nil
}

// coldPerRepo is how many cold tags go to one upstream repository before the next one starts:
// cold pulls are new tags of known repositories and, now and then, a new repository.
const coldPerRepo = 20

// cold pushes a new image to the emulated Docker Hub (not counted as load) and pulls it through
// berth, which has never seen it: an upstream manifest GET and a fill per blob.
func (l *soakLoad) cold(ctx context.Context, c *http.Client, rng *rand.Rand) error {
	n := l.coldRepos.Add(1)
	layer := make([]byte, 1024+rng.IntN(3072))
	for i := range layer {
		layer[i] = byte(rng.Uint32())
	}
	img, err := l.hub.PushImage(fmt.Sprintf("library/soak-cold-%d", n/coldPerRepo), "c"+strconv.FormatInt(n, 10), layer)
	if err != nil {
		return err
	}
	return l.proxyPull(ctx, c, img)
}
