package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/emulation"
	"github.com/chromedp/chromedp"

	"github.com/berth/berth/internal/hubemu"
)

// chromium finds Debian's chromium (scripts/install-tools.sh installs it).
func chromium(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return tool(t, "chromium") // fails, or skips with BERTH_E2E_SKIP_MISSING
}

// consoleBrowser is a headless chromium driven by chromedp that fails the test on any error the
// page reports: an uncaught exception, console.error or console.warn, or a browser log entry of
// level error or warning (a resource that failed to load, a Content-Security-Policy violation).
type consoleBrowser struct {
	t       *testing.T
	ctx     context.Context
	base    string
	mu      sync.Mutex
	errs    []string
	shotDir string
}

func newConsoleBrowser(t *testing.T, base string) *consoleBrowser {
	t.Helper()
	// --no-sandbox: the tests run as root (CI), where chromium's sandbox refuses to start.
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium(t)), chromedp.NoSandbox, chromedp.Headless, chromedp.DisableGPU,
		chromedp.WindowSize(1280, 900), chromedp.Flag("hide-scrollbars", true))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelC := chromedp.NewContext(actx)
	// Bounded: a browser that hangs fails the test instead of running into the suite's timeout.
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	t.Cleanup(func() { cancelT(); cancelC(); cancelA() })
	b := &consoleBrowser{t: t, ctx: ctx, base: base, shotDir: t.ArtifactDir()}
	if err := chromedp.Do(ctx); err != nil { // starts the browser and opens the tab
		t.Fatalf("starting chromium: %v", err)
	}
	messages := chromedp.Console(ctx)
	go func() {
		for m, err := range messages {
			if err != nil {
				return
			}
			switch m.Type {
			case chromedp.ConsoleException, chromedp.ConsoleError, chromedp.ConsoleWarning:
				b.mu.Lock()
				b.errs = append(b.errs, fmt.Sprintf("%s (%s %s)", m, m.Source, m.URL))
				b.mu.Unlock()
			}
		}
	}()
	return b
}

// do runs actions, failing the test with what when they fail.
func (b *consoleBrowser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	if err := chromedp.Do(b.ctx, actions...); err != nil {
		loc, _ := chromedp.Run(b.ctx, chromedp.Location())
		b.t.Fatalf("%s: %v (page %s)", what, err, loc)
	}
}

// get runs an action that returns a value.
func get[T any](b *consoleBrowser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	v, err := chromedp.Run(b.ctx, a)
	if err != nil {
		loc, _ := chromedp.Run(b.ctx, chromedp.Location())
		b.t.Fatalf("%s: %v (page %s)", what, err, loc)
	}
	return v
}

// call sends a protocol command to the tab.
func call[P, R any](b *consoleBrowser, what string, cmd cdp.Command[P, R], params P) {
	b.t.Helper()
	if _, err := chromedp.Call(b.ctx, cmd, params); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// noErrors fails the test if the pages reported any error so far, except those that contain
// one of allowed.
func (b *consoleBrowser) noErrors(allowed ...string) {
	b.t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
next:
	for _, e := range b.errs {
		for _, a := range allowed {
			if strings.Contains(e, a) {
				continue next
			}
		}
		b.t.Errorf("browser reported: %s", e)
	}
	b.errs = nil
}

// readmeShots are the screenshots the README shows.
var readmeShots = map[string]bool{"repository": true, "upstreams": true, "repository-dark": true, "phone": true}

// shot saves a screenshot of the whole page (PNG: quality 100) as name.png in the test's artifact
// directory (kept with go test -artifacts), and with BERTH_UPDATE_SCREENSHOTS=1 those the README
// shows into docs/screenshots/.
func (b *consoleBrowser) shot(name string) {
	b.t.Helper()
	png := get(b, "screenshot "+name, chromedp.FullScreenshot(100))
	if err := os.WriteFile(filepath.Join(b.shotDir, name+".png"), png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	if os.Getenv("BERTH_UPDATE_SCREENSHOTS") == "1" && readmeShots[name] {
		dir := filepath.Join(repoRoot, "docs", "screenshots")
		os.MkdirAll(dir, 0o755)
		if err := os.WriteFile(filepath.Join(dir, "console-"+name+".png"), png, 0o644); err != nil {
			b.t.Fatal(err)
		}
	}
}

// login logs in with the keyboard only: the user name field has the focus, Tab moves to the
// password, Enter submits.
func (b *consoleBrowser) login(user, password string) {
	b.t.Helper()
	b.do("login as "+user,
		chromedp.Navigate(b.base+"/ui/"),
		chromedp.WaitVisible(chromedp.CSS(`#username`)),
		chromedp.KeyEvent(user),
		chromedp.KeyEvent("\t"),
		chromedp.KeyEvent(password),
		chromedp.KeyEvent("\r"),
		chromedp.WaitVisible(chromedp.CSS(`form.logout`)),
	)
}

func (b *consoleBrowser) logout() {
	b.t.Helper()
	b.do("logout", chromedp.Click(chromedp.CSS(`form.logout button`)), chromedp.WaitVisible(chromedp.CSS(`#username`)))
}

func (b *consoleBrowser) text(sel string) string {
	b.t.Helper()
	return get(b, "text of "+sel, chromedp.Text(chromedp.CSS(sel)))
}

func (b *consoleBrowser) html(sel string) string {
	b.t.Helper()
	return get(b, "HTML of "+sel, chromedp.OuterHTML(chromedp.CSS(sel)))
}

// TestConsoleBrowser drives the web console in a real browser (Debian's chromium, headless):
// log in by keyboard, browse repositories, tags and referrers, copy a pull command, see the
// upstream quota chart after pulls through the Docker Hub emulator, create a robot and see its
// secret once, a user without grants sees nothing private; dark mode and a phone's width; no
// errors in the browser's console on any page.
func TestConsoleBrowser(t *testing.T) {
	crane, oras := tool(t, "crane"), tool(t, "oras")
	hub, err := hubemu.Start(hubemu.Options{RealmOnRegistry: true, Limit: 100, Window: 6 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(hub.Close)
	ptImage(t, hub, "library/alpine", "3")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "berth.yaml")
	clWriteFile(t, cfg, []byte(fmt.Sprintf(`proxy:
  defaults: false
  rules:
    - prefix: docker-hub
      upstream: %s
      docker_hub: true
      revalidate: always
      quota_reserve: 10
`, hub.RegistryURL())))
	b := startSecureBerth(t, "--config", cfg)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("berth log:\n%s", b.Log())
		}
	})
	admin := b.AdminPassword()
	viewerPass := strings.TrimSpace(b.Admin("user", "add", "viewer"))

	// Content: a pushed image with an SBOM referring to it, and an image pulled through the
	// cache three times (one upstream pull, two saved).
	clRun(t, dir, crane, "auth", "login", b.Addr, "-u", "admin", "-p", admin)
	clWriteFile(t, filepath.Join(dir, "layer.tar"), clTar(t, map[string]string{"hello.txt": "hello from the console test\n"}))
	clRun(t, dir, crane, "append", "--oci-empty-base", "-f", "layer.tar", "-t", b.Addr+"/team/app:1.0")
	clRun(t, dir, crane, "mutate", "--set-platform", "linux/amd64", b.Addr+"/team/app:1.0")
	clWriteFile(t, filepath.Join(dir, "sbom.json"), []byte(`{"spdxVersion":"SPDX-2.3"}`))
	clRun(t, dir, oras, "attach", "--plain-http", "-u", "admin", "-p", admin, "--artifact-type", "application/spdx+json",
		b.Addr+"/team/app:1.0", "sbom.json")
	for range 3 {
		clRun(t, dir, crane, "pull", b.Addr+"/docker-hub/library/alpine:3", filepath.Join(dir, "alpine.tar"))
	}

	br := newConsoleBrowser(t, b.URL())
	br.login("admin", admin)
	if h := br.text(`h1`); h != "Repositories" {
		t.Fatalf("after login: %q", h)
	}
	list := br.text(`main table`)
	for _, want := range []string{"team/app", "docker-hub/library/alpine"} {
		if !strings.Contains(list, want) {
			t.Errorf("repositories list lacks %s:\n%s", want, list)
		}
	}
	br.shot("repositories")
	// The keyboard: the first Tab reaches the skip link, shown with a focus outline.
	br.do("tab", chromedp.KeyEvent("\t"))
	if f := get(br, "focus", chromedp.Evaluate[string](`document.activeElement.className + " " + getComputedStyle(document.activeElement).outlineStyle`)); f != "skip solid" {
		t.Errorf("after one Tab the focus is on %q, want the skip link with a solid outline", f)
	}

	// Tags, with the pull command copied.
	br.do("open team/app", chromedp.Click(chromedp.CSS(`a[href="/ui/repo/team/app"]`)), chromedp.WaitVisible(chromedp.CSS(`table.tags`)))
	row := br.text(`table.tags tbody tr`)
	for _, want := range []string{"1.0", "linux/amd64", "docker pull " + b.Addr + "/team/app:1.0"} {
		if !strings.Contains(row, want) {
			t.Errorf("team/app's tag row lacks %q: %s", want, row)
		}
	}
	if refs := br.text(`td[data-label="Referrers"]`); refs != "1" {
		t.Errorf("referrers of team/app:1.0: %q, want 1", refs)
	}
	for _, name := range []string{"clipboard-read", "clipboard-write"} {
		call(br, "allow "+name, browser.SetPermission, browser.SetPermissionParams{
			Permission: &browser.PermissionDescriptor{Name: name}, Setting: browser.PermissionSettingGranted, Origin: b.URL()})
	}
	br.do("copy the pull command",
		chromedp.Click(chromedp.CSS(`table.tags button.copy`)),
		chromedp.WaitVisible(chromedp.CSS(`button.copy[data-copied]`)))
	copied := get(br, "the copied text", chromedp.AttributeValue(chromedp.CSS(`button.copy`), "data-copied"))
	clip := get(br, "the clipboard", chromedp.Evaluate[string](`navigator.clipboard.readText()`, chromedp.EvalAwaitPromise))
	want := "docker pull " + b.Addr + "/team/app:1.0"
	if copied.Value != want || clip != want {
		t.Errorf("copied %q, clipboard holds %q; want %q", copied.Value, clip, want)
	}
	br.shot("repository")

	// The manifest, with its SBOM among the referrers.
	br.do("open the manifest", chromedp.Click(chromedp.CSS(`td[data-label="Digest"] a`)), chromedp.WaitVisible(chromedp.CSS(`#referrers`)))
	if refs := br.text(`#referrers + .scroll table`); !strings.Contains(refs, "application/spdx+json") {
		t.Errorf("referrers table: %q", refs)
	}

	// The upstream quota chart, after the pulls through the emulator.
	br.do("open upstreams", chromedp.Click(chromedp.CSS(`a[href="/ui/upstreams"]`)), chromedp.WaitVisible(chromedp.CSS(`svg.chart`)))
	points := get(br, "chart points", chromedp.Evaluate[int](`document.querySelectorAll("svg.chart circle.point").length`))
	line := get(br, "chart line", chromedp.AttributeValue(chromedp.CSS(`svg.chart polyline.remaining`), "points"))
	if points == 0 || line.Value == "" {
		t.Errorf("quota chart: %d points, line %q", points, line.Value)
	}
	counters := br.text(`table.counters`)
	if !strings.Contains(counters, "Upstream pulls saved") {
		t.Errorf("counters: %s", counters)
	}
	br.shot("upstreams")

	// A cached tag revalidated with the emulator, then the image evicted, from the cache page.
	br.do("revalidate alpine:3", chromedp.Navigate(b.URL()+"/ui/admin/cache"), chromedp.WaitVisible(chromedp.CSS(`#c-repo`)),
		chromedp.SendKeys(chromedp.CSS(`#c-repo`), "docker-hub/library/alpine"), chromedp.SendKeys(chromedp.CSS(`#c-ref`), "3"),
		chromedp.Click(chromedp.CSS(`button[value="revalidate"]`)), chromedp.WaitVisible(chromedp.CSS(`p.notice`)))
	if n := br.text(`p.notice`); !strings.Contains(n, "docker-hub/library/alpine:3 is unchanged upstream") {
		t.Errorf("revalidate: %q", n)
	}
	// A fresh page first: the notice to wait for must be the eviction's, not the revalidation's.
	br.do("evict alpine:3", chromedp.Navigate(b.URL()+"/ui/admin/cache"), chromedp.WaitVisible(chromedp.CSS(`#c-repo`)),
		chromedp.SendKeys(chromedp.CSS(`#c-repo`), "docker-hub/library/alpine"), chromedp.SendKeys(chromedp.CSS(`#c-ref`), "3"),
		chromedp.Click(chromedp.CSS(`button[value="evict"]`)), chromedp.WaitVisible(chromedp.CSS(`p.notice`)))
	if n := br.text(`p.notice`); !strings.HasPrefix(n, "Evicted docker-hub/library/alpine@") {
		t.Errorf("evict: %q", n)
	}

	// A robot: its secret on the page that created it, and never again.
	br.do("open robots", chromedp.Click(chromedp.CSS(`a[href="/ui/admin/"]`)), chromedp.WaitVisible(chromedp.CSS(`a[href="/ui/admin/robots"]`)),
		chromedp.Click(chromedp.CSS(`a[href="/ui/admin/robots"]`)), chromedp.WaitVisible(chromedp.CSS(`#r-name`)))
	br.do("create a robot",
		chromedp.SendKeys(chromedp.CSS(`#r-name`), "deployer"),
		chromedp.SendKeys(chromedp.CSS(`#r-desc`), "deploys team/app"),
		chromedp.SendKeys(chromedp.CSS(`#r-days`), "30"),
		chromedp.Click(chromedp.CSS(`form.stack button[type="submit"]`)),
		chromedp.WaitVisible(chromedp.CSS(`#secret`)))
	secret := get(br, "the secret", chromedp.Value(chromedp.CSS(`#secret`)))
	if !strings.HasPrefix(secret, "berth_rbt_") {
		t.Fatalf("the new robot's secret: %q", secret)
	}
	if code, _, body := clGetAuth(t, b.URL()+"/v2/", "deployer", secret); code != 200 {
		t.Errorf("GET /v2/ as the new robot: %d %s", code, body)
	}
	br.shot("robot-secret")
	br.do("the robots page again", chromedp.Navigate(b.URL()+"/ui/admin/robots"), chromedp.WaitVisible(chromedp.CSS(`#r-name`)))
	if html := br.html(`main`); strings.Contains(html, secret) || strings.Contains(html, "berth_rbt_") || !strings.Contains(html, "deploys team/app") {
		t.Errorf("the robots page after the robot was created: want the robot listed, its secret gone:\n%s", html)
	}

	// Dark mode: the same page on a dark background.
	call(br, "dark mode", emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "dark"}}})
	br.do("dark page", chromedp.Navigate(b.URL()+"/ui/repo/team/app"), chromedp.WaitVisible(chromedp.CSS(`table.tags`)))
	if bg := get(br, "background", chromedp.Evaluate[string](`getComputedStyle(document.documentElement).backgroundColor`)); bg != "rgb(15, 20, 25)" {
		t.Errorf("dark mode background: %s", bg)
	}
	br.shot("repository-dark")
	call(br, "light mode", emulation.SetEmulatedMedia, emulation.SetEmulatedMediaParams{
		Features: []*emulation.MediaFeature{{Name: "prefers-color-scheme", Value: "light"}}})

	// A phone's width: nothing scrolls sideways.
	call(br, "phone width", emulation.SetDeviceMetricsOverride, emulation.SetDeviceMetricsOverrideParams{
		Width: 375, Height: 740, DeviceScaleFactor: 2, Mobile: true})
	br.do("phone page", chromedp.Navigate(b.URL()+"/ui/repo/team/app"), chromedp.WaitVisible(chromedp.CSS(`table.tags`)))
	// Against 375 itself: a mobile browser widens its window (innerWidth) to a page too wide.
	if scrollW := get(br, "page width", chromedp.Evaluate[int](`document.documentElement.scrollWidth`)); scrollW > 375 {
		t.Errorf("at 375 px the page is %d px wide", scrollW)
	}
	br.shot("phone")
	call(br, "desktop width", emulation.ClearDeviceMetricsOverride, cdp.Empty{})
	br.noErrors()

	// A user without grants sees nothing private.
	br.logout()
	br.login("viewer", viewerPass)
	if s := br.text(`#no-repos`); !strings.Contains(s, "no repository you may pull") {
		t.Errorf("viewer's repositories: %q", s)
	}
	if html := br.html(`main`); strings.Contains(html, "team/app") || strings.Contains(html, "alpine") {
		t.Errorf("viewer sees a private repository:\n%s", html)
	}
	br.do("viewer guesses", chromedp.Navigate(b.URL()+"/ui/repo/team/app"), chromedp.WaitVisible(chromedp.CSS(`h1`)))
	if h := br.text(`h1`); h != "Not found" {
		t.Errorf("viewer on team/app: %q", h)
	}
	if nav := br.html(`header`); strings.Contains(nav, "/ui/upstreams") || strings.Contains(nav, "/ui/admin") {
		t.Errorf("viewer's menu offers admin pages:\n%s", nav)
	}
	// The browser logs the 404 it got for the guessed page; nothing else may appear.
	br.noErrors("status of 404")
}

// clGetAuth is a GET with Basic credentials; it returns the status, headers and body.
func clGetAuth(t *testing.T, url, user, password string) (int, http.Header, []byte) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth(user, password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, body
}
