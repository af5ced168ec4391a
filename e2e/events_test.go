package e2e

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth/berth/internal/hubemu"
)

// evReceiver is a webhook receiver written from the README: it checks each delivery's
// signature and timestamp, and records the events it took, per path (webhook).
type evReceiver struct {
	secret string
	down   atomic.Bool // answer 503, as a receiver being redeployed does
	hang   chan struct{}
	hung   atomic.Int32 // requests to /hang taken

	mu      sync.Mutex
	got     map[string][]evEvent
	refused []string // signature failures
	downs   int      // 503s answered
}

// evEvent is the part of a CloudEvent the test checks.
type evEvent struct {
	SpecVersion string `json:"specversion"`
	ID          string `json:"id"`
	Source      string `json:"source"`
	Type        string `json:"type"`
	Subject     string `json:"subject"`
	Data        struct {
		Repository string `json:"repository"`
		Digest     string `json:"digest"`
		Tag        string `json:"tag"`
		Previous   string `json:"previous"`
		Actor      string `json:"actor"`
		Rule       string `json:"rule"`
		Remaining  *int   `json:"remaining"`
	} `json:"data"`
}

func (e evEvent) String() string {
	s := strings.TrimPrefix(e.Type, "io.berth.")
	if e.Data.Tag != "" {
		s += " " + e.Data.Tag
	}
	return s
}

func (rc *evReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/hang" {
		rc.hung.Add(1)
		<-rc.hang // a receiver that never answers (until the test ends)
		return
	}
	body, _ := io.ReadAll(r.Body)
	ts := r.Header.Get("X-Berth-Timestamp")
	mac := hmac.New(sha256.New, []byte(rc.secret))
	mac.Write([]byte(ts + "." + string(body)))
	want := "sha256=" + hex.EncodeToString(mac.Sum(nil))
	sec, err := strconv.ParseInt(ts, 10, 64)
	if !hmac.Equal([]byte(r.Header.Get("X-Berth-Signature")), []byte(want)) || err != nil || time.Since(time.Unix(sec, 0)).Abs() > 5*time.Minute {
		rc.mu.Lock()
		rc.refused = append(rc.refused, r.URL.Path+": "+r.Header.Get("X-Berth-Signature"))
		rc.mu.Unlock()
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	if r.URL.Path == "/team" && rc.down.Load() {
		rc.mu.Lock()
		rc.downs++
		rc.mu.Unlock()
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
		return
	}
	var e evEvent
	if err := json.Unmarshal(body, &e); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	rc.mu.Lock()
	rc.got[r.URL.Path] = append(rc.got[r.URL.Path], e)
	rc.mu.Unlock()
	w.WriteHeader(http.StatusAccepted)
}

// byRepo returns what path took, per repository, in arrival order.
func (rc *evReceiver) byRepo(path string) map[string][]evEvent {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := map[string][]evEvent{}
	for _, e := range rc.got[path] {
		out[e.Data.Repository] = append(out[e.Data.Repository], e)
	}
	return out
}

func (rc *evReceiver) count(path string) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.got[path])
}

// TestWebhooks pushes, moves a tag, deletes and pulls through the hub emulator with crane, and
// checks what a local receiver gets: every event type, signed, in each repository's order; a
// receiver that was down gets its events once it is back; a receiver that never answers does
// not hold up a push.
func TestWebhooks(t *testing.T) {
	crane := tool(t, "crane")
	hub, err := hubemu.Start(hubemu.Options{RealmOnRegistry: true, Limit: 2})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	for _, tag := range []string{"1", "2"} {
		ptImage(t, hub, "library/nginx", tag)
	}
	rc := &evReceiver{secret: "webhook-secret", got: map[string][]evEvent{}, hang: make(chan struct{})}
	rc.down.Store(true)
	srv := httptest.NewServer(rc)
	t.Cleanup(srv.Close)

	dir := t.TempDir()
	secretFile := filepath.Join(dir, "secret")
	clWriteFile(t, secretFile, []byte("webhook-secret\n"))
	cfg := filepath.Join(dir, "berth.yaml")
	clWriteFile(t, cfg, fmt.Appendf(nil, `proxy:
  defaults: false
  rules:
    - prefix: docker-hub
      upstream: %[1]s
      docker_hub: true
      revalidate: always
      quota_reserve: 1
events:
  source: https://berth.example
  webhooks:
    - name: all
      url: %[2]s/all
      secret: webhook-secret
    - name: team-pushes
      url: %[2]s/team
      secret_file: %[3]s
      repositories: ["team/*"]
      types: [io.berth.manifest.pushed, io.berth.tag.moved]
    - name: hangs
      url: %[2]s/hang
      secret: webhook-secret
      timeout: 10m
`, hub.RegistryURL(), srv.URL, secretFile))
	b := startBerth(t, "--config", cfg)
	// Cleanups run last first: the hanging receiver answers before berth stops (which would
	// wait for it) and before srv.Close (which waits for its handlers).
	t.Cleanup(func() { close(rc.hang) })
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("berth log:\n%s", b.Log())
		}
	})
	host := b.Addr

	var first, second, other string
	clStep(t, "push, move a tag, delete", func(t *testing.T) {
		clWriteFile(t, filepath.Join(dir, "a.tar"), clTar(t, map[string]string{"a.txt": "a\n"}))
		clWriteFile(t, filepath.Join(dir, "b.tar"), clTar(t, map[string]string{"b.txt": "b\n"}))
		first = clLastDigest(t, "crane append", clRun(t, dir, crane, "append", "--oci-empty-base", "-f", "a.tar", "-t", host+"/team/app:v1"))
		second = clLastDigest(t, "crane append", clRun(t, dir, crane, "append", "--oci-empty-base", "-f", "b.tar", "-t", host+"/team/app:v1"))
		other = clLastDigest(t, "crane append", clRun(t, dir, crane, "append", "--oci-empty-base", "-f", "a.tar", "-t", host+"/other/app:v1"))
		clRun(t, dir, crane, "tag", host+"/team/app:v1", "v2")
		clRun(t, dir, crane, "delete", host+"/team/app@"+first)
		req, _ := http.NewRequest(http.MethodDelete, b.URL()+"/v2/team/app/manifests/v2", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("DELETE tag v2: %s", resp.Status)
		}
	})
	clStep(t, "pull through", func(t *testing.T) {
		// The hub allows two manifest GETs: after the first, one is left, the rule's reserve.
		clRun(t, dir, crane, "manifest", host+"/docker-hub/nginx:1")
		clRun(t, dir, crane, "manifest", host+"/docker-hub/nginx:2")
	})
	rc.down.Store(false) // the team receiver is back
	deadline := time.Now().Add(90 * time.Second)
	for rc.count("/all") < 10 || rc.count("/team") < 4 {
		rc.mu.Lock()
		refused := len(rc.refused)
		rc.mu.Unlock()
		if time.Now().After(deadline) || refused > 0 {
			t.Fatalf("the receiver has %v and %v (%d signatures refused)", rc.byRepo("/all"), rc.byRepo("/team"), refused)
		}
		time.Sleep(50 * time.Millisecond)
	}
	time.Sleep(time.Second) // nothing more comes
	rc.mu.Lock()
	if len(rc.refused) > 0 {
		t.Errorf("signatures refused: %v", rc.refused)
	}
	if rc.downs == 0 {
		t.Error("the team receiver was never tried while it was down")
	}
	if rc.hung.Load() != 1 {
		t.Errorf("the receiver that hangs got %d requests, want 1: the first push's event, held while every other request went on", rc.hung.Load())
	}
	rc.mu.Unlock()

	all := rc.byRepo("/all")
	check := func(hook, repo string, got []evEvent, want ...string) {
		t.Helper()
		var names []string
		for _, e := range got {
			names = append(names, e.String())
			if e.SpecVersion != "1.0" || e.Source != "https://berth.example" || e.Subject != repo || len(e.ID) != 32 {
				t.Errorf("%s: %s: envelope %+v", hook, repo, e)
			}
		}
		if !slices.Equal(names, want) {
			t.Errorf("%s: %s: got %v; want %v", hook, repo, names, want)
		}
	}
	check("all", "team/app", all["team/app"], "manifest.pushed v1", "manifest.pushed v1", "tag.moved v1", "manifest.pushed v2",
		"manifest.deleted", "tag.deleted v2")
	check("all", "other/app", all["other/app"], "manifest.pushed v1")
	check("all", "docker-hub/library/nginx", all["docker-hub/library/nginx"], "upstream.quota_low", "cache.filled 1", "cache.filled 2")
	if len(all) != 3 {
		t.Errorf("all: repositories %v", all)
	}
	team := rc.byRepo("/team")
	check("team-pushes", "team/app", team["team/app"], "manifest.pushed v1", "manifest.pushed v1", "tag.moved v1", "manifest.pushed v2")
	if len(team) != 1 {
		t.Errorf("team-pushes: repositories %v", team)
	}

	ta := all["team/app"]
	if ta[0].Data.Digest != first || ta[1].Data.Digest != second || ta[2].Data.Previous != first || ta[2].Data.Digest != second ||
		ta[4].Data.Digest != first || ta[5].Data.Digest != second || ta[0].Data.Actor != "anonymous" {
		t.Errorf("team/app events: %+v", ta)
	}
	if all["other/app"][0].Data.Digest != other {
		t.Errorf("other/app: %+v", all["other/app"])
	}
	if q := all["docker-hub/library/nginx"][0]; q.Data.Rule != "docker-hub" || q.Data.Remaining == nil || *q.Data.Remaining != 1 {
		t.Errorf("quota event %+v", q)
	}

	// The deliveries in the metrics: what each receiver accepted, the team receiver's refusals
	// while it was down, the events waiting behind the receiver that hangs.
	fams := scrape(t, b, "")
	rc.mu.Lock()
	downs := rc.downs
	rc.mu.Unlock()
	for _, w := range []struct {
		name, hook string
		want       float64
	}{
		{"berth_webhook_deliveries_total", "all", float64(rc.count("/all"))},
		{"berth_webhook_deliveries_total", "team-pushes", float64(rc.count("/team"))},
		{"berth_webhook_failed_attempts_total", "team-pushes", float64(downs)},
		{"berth_webhook_deliveries_total", "hangs", 0},
		{"berth_webhook_dropped_total", "all", 0},
	} {
		if got, ok := sample(fams, w.name, map[string]string{"webhook": w.hook}); !ok || got != w.want {
			t.Errorf("%s{webhook=%s} = %v (present: %v), want %v", w.name, w.hook, got, ok, w.want)
		}
	}
	if got, _ := sample(fams, "berth_webhook_queued", map[string]string{"webhook": "hangs"}); got < 1 {
		t.Errorf("berth_webhook_queued{webhook=hangs} = %v, want the events behind the one held", got)
	}
}
