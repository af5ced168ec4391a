// Package console is berth's web console at /ui/: pages rendered on the server (html/template,
// one embedded stylesheet, a few lines of script that only add a copy button), for people who
// log in with their berth account. It shows what the registry API would let the same account
// see — repositories, tags, platforms, sizes, referrers, pull commands — and to administrators the
// pull-through cache's upstream quota and counters, and the admin pages.
//
// Every page is authorized with auth.Service against the account's grants as they are now; a
// repository the user may not pull is answered 404, as the API answers it. Every form carries a
// CSRF token (session.go) and is checked for its Origin.
package console

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/berth/berth/internal/admin"
	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
	"github.com/berth/berth/internal/proxy"
)

// Prefix is where the console is served.
const Prefix = "/ui/"

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// Store is what the console reads of the metadata store.
type Store interface {
	Repositories(ctx context.Context, p metadata.Page) ([]string, bool, error)
	ListManifests(ctx context.Context, repo string) ([]metadata.ManifestEntry, error)
	LastPulled(ctx context.Context, repo string) (map[oci.Digest]time.Time, error)
	Referrers(ctx context.Context, repo string, d oci.Digest, artifactType string) ([]oci.Descriptor, error)
	Usage(ctx context.Context, pattern string, d oci.Digest) (int64, bool, error)
}

// Blobs opens stored blobs (image configs, for their platform).
type Blobs interface {
	Open(ctx context.Context, d oci.Digest) (io.ReadSeekCloser, int64, error)
}

// Options configure a Console.
type Options struct {
	Auth  *auth.Service // required: the console has no pages without accounts
	Store Store
	Blobs Blobs
	Cache *proxy.Cache // the pull-through cache (its rules, counters and quota)
	Admin admin.API    // the admin pages' operations; nil: no admin forms
	// Webhooks are the event webhooks' deliveries; nil: none configured.
	Webhooks Webhooks
	// Version is berth's version for the footer.
	Version string
	Log     *slog.Logger
	Now     func() time.Time // tests move the clock; nil: time.Now
}

// Console serves the web console.
type Console struct {
	opt   Options
	pages map[string]*template.Template
	mux   *http.ServeMux
}

// New returns the console; it fails when a template does not parse.
func New(opt Options) (*Console, error) {
	if opt.Auth == nil || opt.Store == nil {
		return nil, errors.New("console: Auth and Store are required")
	}
	if opt.Log == nil {
		opt.Log = slog.New(slog.DiscardHandler)
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	c := &Console{opt: opt, pages: map[string]*template.Template{}, mux: http.NewServeMux()}
	names, err := fs.Glob(templateFS, "templates/*.html")
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		base := strings.TrimSuffix(strings.TrimPrefix(n, "templates/"), ".html")
		if base == "layout" {
			continue
		}
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", n)
		if err != nil {
			return nil, fmt.Errorf("console template %s: %w", n, err)
		}
		c.pages[base] = t
	}
	static, _ := fs.Sub(staticFS, "static")
	c.mux.Handle("GET "+Prefix+"static/", http.StripPrefix(Prefix+"static/", cacheStatic(http.FileServerFS(static))))
	c.mux.Handle("GET "+Prefix+"login", c.handle(c.loginForm))
	c.mux.Handle("POST "+Prefix+"login", c.handle(c.login))
	c.mux.Handle("POST "+Prefix+"logout", c.user(c.logout))
	c.mux.Handle("GET "+Prefix+"{$}", c.user(c.repositories))
	c.mux.Handle("GET "+Prefix+"repo/", c.user(c.repository))
	c.mux.Handle("GET "+Prefix+"upstreams", c.user(c.upstreams))
	c.routeAdmin()
	c.mux.Handle(Prefix, c.handle(func(w http.ResponseWriter, r *http.Request) error { return errNotFound }))
	return c, nil
}

func (c *Console) now() time.Time { return c.opt.Now() }

// ServeHTTP serves the console with its security headers on every response.
func (c *Console) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	// No inline script or style: the copy script and the stylesheet are files of the console.
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "+
		"object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "same-origin")
	if r.TLS != nil {
		h.Set("Strict-Transport-Security", "max-age=31536000")
	}
	c.mux.ServeHTTP(w, r)
}

func cacheStatic(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") { // no directory listings
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-cache") // revalidated: the files change with berth
		h.ServeHTTP(w, r)
	})
}

// Errors the handlers return, answered with a page of their own.
var (
	errNotFound  = &pageError{http.StatusNotFound, "Not found", "There is no such page, or you may not see it."}
	errForbidden = &pageError{http.StatusForbidden, "Forbidden", "Your account may not do this."}
	errCSRF      = &pageError{http.StatusForbidden, "Form expired or forged",
		"This form did not come from this console page, or your session changed since it was shown. Go back, reload the page and try again."}
)

type pageError struct {
	status int
	title  string
	msg    string
}

func (e *pageError) Error() string { return e.title + ": " + e.msg }

// request is one request's caller and what its pages need to know of it.
type request struct {
	w       http.ResponseWriter
	r       *http.Request
	key     []byte
	sess    *session
	p       *auth.Principal
	isAdmin bool   // admin on every repository
	notice  string // what the post this page answers did
}

// csrf is the token the session's forms carry.
func (q *request) csrf() string { return token(q.key, "session", q.sess.Nonce) }

type handlerFunc func(w http.ResponseWriter, r *http.Request) error
type userFunc func(q *request) error

// handle adapts a handler that returns an error: one place turns errors into pages.
func (c *Console) handle(h handlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := h(w, r); err != nil {
			c.fail(w, r, nil, err)
		}
	})
}

func (c *Console) fail(w http.ResponseWriter, r *http.Request, q *request, err error) {
	var pe *pageError
	if !errors.As(err, &pe) {
		if errors.Is(err, admin.ErrDenied) { // the admin service's own check, behind the console's
			pe = errForbidden
		} else if errors.Is(err, metadata.ErrUnavailable) {
			pe = &pageError{http.StatusServiceUnavailable, "Unavailable", "The metadata database cannot be reached; try again shortly."}
		} else {
			pe = &pageError{http.StatusInternalServerError, "Internal error", "Something went wrong on the server; the log says what."}
		}
		if pe.status >= 500 {
			c.opt.Log.Error("console", "method", r.Method, "path", r.URL.Path, "err", err)
		}
	}
	data := map[string]any{"Title": pe.title, "Message": pe.msg}
	c.render(w, q, pe.status, "error", data)
}

// user adapts a handler of a logged-in user's request: without a valid session, GETs go to the
// login page (and come back after), anything else is refused; POSTs must carry the session's
// CSRF token and come from the console's own origin.
func (c *Console) user(h userFunc) http.Handler {
	return c.handle(func(w http.ResponseWriter, r *http.Request) error {
		key, err := c.key(r.Context())
		if err != nil {
			return err
		}
		q := &request{w: w, r: r, key: key}
		s, ok := c.readSession(r, key)
		if ok {
			if q.p, err = c.opt.Auth.SessionPrincipal(r.Context(), s.User, s.FP); err != nil {
				return err
			}
		}
		if q.p == nil {
			if _, err := r.Cookie(sessionCookie); err == nil {
				http.SetCookie(w, c.cookie(r, sessionCookie, "", -1))
			}
			if r.Method != http.MethodGet && r.Method != http.MethodHead {
				// A form posted from a session that ended changes nothing: log in again.
				http.Redirect(w, r, Prefix+"login", http.StatusSeeOther)
				return nil
			}
			http.Redirect(w, r, Prefix+"login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return nil
		}
		q.sess = s
		now := c.now()
		if now.Sub(time.Unix(s.Seen, 0)) > renewal {
			s.Seen = now.Unix()
			c.writeSession(w, r, key, s)
		}
		if r.Method == http.MethodPost {
			if err := c.checkForm(r, q.csrf()); err != nil {
				return err
			}
		}
		if q.isAdmin, err = c.opt.Auth.AdminOf(r.Context(), q.p, "*"); err != nil {
			return err
		}
		if err := h(q); err != nil {
			c.fail(w, r, q, err)
		}
		return nil
	})
}

// checkForm checks a POST: from this origin (when the browser says where it came from), with
// the expected CSRF token.
func (c *Console) checkForm(r *http.Request, want string) error {
	if o := r.Header.Get("Origin"); o != "" && o != "null" && !sameOrigin(r, o) {
		return errCSRF
	} else if o == "null" {
		return errCSRF
	}
	r.Body = http.MaxBytesReader(nil, r.Body, 64<<10)
	if err := r.ParseForm(); err != nil {
		return &pageError{http.StatusBadRequest, "Bad form", "The form could not be read: " + err.Error()}
	}
	got := r.PostForm.Get("csrf")
	if got == "" || len(got) != len(want) || !equal(got, want) {
		return errCSRF
	}
	return nil
}

func sameOrigin(r *http.Request, origin string) bool {
	u, err := url.Parse(origin)
	if err != nil {
		return false
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	// Behind a TLS-terminating proxy the request arrives as http: the host is what must match.
	return u.Host == r.Host && (u.Scheme == scheme || u.Scheme == "https")
}

// render writes page name with data, inside the layout.
func (c *Console) render(w http.ResponseWriter, q *request, status int, name string, data map[string]any) {
	t := c.pages[name]
	if data == nil {
		data = map[string]any{}
	}
	data["Version"] = c.opt.Version
	if q != nil && q.p != nil {
		data["User"] = strings.TrimPrefix(q.p.Subject, "user:")
		data["CSRF"] = q.csrf()
		data["IsAdmin"] = q.isAdmin
		data["ShowUpstreams"] = len(c.visibleRules(q)) > 0
		data["Path"] = q.r.URL.Path
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store") // pages show what one account may see
	w.WriteHeader(status)
	if err := t.ExecuteTemplate(w, "layout.html", data); err != nil {
		c.opt.Log.Error("console: rendering", "page", name, "err", err)
	}
}
