package admin

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"slices"
	"strings"

	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// The admin API's error codes besides the OCI ones it shares (UNAUTHORIZED, DENIED, UNSUPPORTED,
// UNAVAILABLE, TOOMANYREQUESTS, INTERNAL_ERROR). Bodies are {"errors":[{"code","message"}]}, as
// on /v2/.
const (
	CodeInvalid  oci.Code = "INVALID"   // 400: a malformed body, name, pattern or action
	CodeNotFound oci.Code = "NOT_FOUND" // 404: no such account, grant, cached tag or route
	CodeExists   oci.Code = "EXISTS"    // 409: the account name is taken
)

// maxBody bounds a request body: the largest is a user with a password and a few groups.
const maxBody = 64 << 10

// route is one endpoint of the admin API.
type route struct {
	method, path string
	serve        func(api API, w http.ResponseWriter, r *http.Request) error
}

// routes is the admin API, at a glance. Collections answer GET (list) and POST (create);
// {name} is an account.
var routes = []route{
	{"GET", "/berth/v1/accounts", listAccounts},
	{"POST", "/berth/v1/accounts", createUser},
	{"GET", "/berth/v1/accounts/{name}", getAccount},
	{"PATCH", "/berth/v1/accounts/{name}", patchAccount},
	{"DELETE", "/berth/v1/accounts/{name}", deleteAccount},
	{"PUT", "/berth/v1/accounts/{name}/password", setPassword},
	{"GET", "/berth/v1/robots", listRobots},
	{"POST", "/berth/v1/robots", createRobot},
	{"GET", "/berth/v1/grants", listGrants},
	{"POST", "/berth/v1/grants", addGrant},
	{"DELETE", "/berth/v1/grants", revokeGrant},
	{"POST", "/berth/v1/cache/revalidate", revalidate},
	{"POST", "/berth/v1/cache/evict", evict},
	{"GET", "/berth/v1/lifecycle/preview", lifecyclePreview},
}

// Handler serves the admin API (the routes above) from api. caller authenticates each request
// (auth.Service.Caller: Basic credentials or a Bearer token, as on /v2/, and its 401 challenge);
// nil lets every request through unauthenticated (berth --dev, whose api decides what that may
// do). Errors are JSON ({"errors":[...]}) whatever goes wrong: 401, 403 naming the grant needed,
// 404, 405 with Allow, 409, 415 for a body that is not application/json, 400 for a body with
// unknown fields.
func Handler(api API, caller func(*http.Request) (*auth.Principal, error), log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	allow := map[string][]string{}
	for _, rt := range routes {
		serve := rt.serve
		mux.HandleFunc(rt.method+" "+rt.path, func(w http.ResponseWriter, r *http.Request) {
			if caller != nil {
				p, err := caller(r)
				if err != nil {
					writeError(w, r, err, log)
					return
				}
				r = r.WithContext(auth.WithPrincipal(r.Context(), p))
			}
			if err := serve(api, w, r); err != nil {
				writeError(w, r, err, log)
			}
		})
		allow[rt.path] = append(allow[rt.path], rt.method)
	}
	for path, methods := range allow {
		if slices.Contains(methods, "GET") {
			methods = append(methods, "HEAD")
		}
		h := strings.Join(methods, ", ")
		// Less specific than the patterns with a method: it answers only the other methods.
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", h)
			writeError(w, r, oci.Errorf(oci.ErrUnsupported, "%s %s: the method is not allowed (allowed: %s)", r.Method, r.URL.Path, h).
				WithStatus(http.StatusMethodNotAllowed), log)
		})
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, r, oci.Errorf(CodeNotFound, "%s is not an endpoint of the admin API", r.URL.Path).WithStatus(http.StatusNotFound), log)
	})
	return mux
}

// writeError answers err: an *oci.Error as it is, the operations' errors by their kind.
func writeError(w http.ResponseWriter, r *http.Request, err error, log *slog.Logger) {
	e := apiError(err)
	if e.HTTPStatus() >= 500 && e.Code == oci.ErrInternal {
		log.Error("admin API", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	for k, v := range e.Header {
		w.Header()[k] = v
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(e.HTTPStatus())
	json.NewEncoder(w).Encode(map[string]any{"errors": []*oci.Error{e}})
}

func apiError(err error) *oci.Error {
	if e := oci.AsError(err); e != nil {
		return e
	}
	var code oci.Code
	var status int
	switch {
	case errors.Is(err, ErrInvalid):
		code, status = CodeInvalid, http.StatusBadRequest
	case errors.Is(err, ErrDenied):
		code, status = oci.ErrDenied, http.StatusForbidden
	case errors.Is(err, metadata.ErrNotFound):
		code, status = CodeNotFound, http.StatusNotFound
	case errors.Is(err, metadata.ErrExists):
		code, status = CodeExists, http.StatusConflict
	case errors.Is(err, ErrUnavailable):
		code, status = oci.ErrUnavailable, http.StatusServiceUnavailable
	default:
		return oci.Errorf(oci.ErrInternal, "internal error")
	}
	return oci.Errorf(code, "%s", err.Error()).WithStatus(status)
}

// decode reads a JSON request body into v strictly: application/json, at most maxBody bytes, one
// object with no field v does not have. Requiring the content type also keeps other web pages
// out: a browser sends a cross-site JSON request only after a preflight berth never answers, and
// it may hold Basic credentials for berth.
func decode(w http.ResponseWriter, r *http.Request, v any) error {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		return oci.Errorf(oci.ErrUnsupported, "the request body must be application/json").WithStatus(http.StatusUnsupportedMediaType)
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return oci.Errorf(CodeInvalid, "the request body is over %d bytes", maxBody).WithStatus(http.StatusRequestEntityTooLarge)
		}
		return invalid("the request body: %v", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return invalid("the request body: more than one JSON value")
	}
	return nil
}

func reply(w http.ResponseWriter, status int, v any) error {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// noQuery refuses query parameters an endpoint does not read (a typo would be ignored silently).
func noQuery(r *http.Request, known ...string) error {
	for k := range r.URL.Query() {
		if !slices.Contains(known, k) {
			return invalid("unknown query parameter %q", k)
		}
	}
	return nil
}

// Wire shapes of the requests and answers.
type (
	accountList struct {
		Accounts []Account `json:"accounts"`
	}
	robotList struct {
		Robots []Account `json:"robots"`
	}
	created struct {
		Account  *Account `json:"account"`
		Password string   `json:"password,omitempty"` // a generated password, shown once
		Secret   string   `json:"secret,omitempty"`   // a robot's secret, shown once
	}
	accountPatch struct {
		Groups *[]string `json:"groups"`
	}
	passwordBody struct {
		Password string `json:"password,omitempty"` // "": generated, and answered
	}
	grantList struct {
		Grants []Grant `json:"grants"`
	}
	grantBody struct {
		Subject string   `json:"subject"`
		Pattern string   `json:"pattern"`
		Actions []string `json:"actions"`
	}
	revalidateBody struct {
		Repository string `json:"repository"`
		Tag        string `json:"tag"`
	}
	evictBody struct {
		Repository string `json:"repository"`
		Reference  string `json:"reference"`
	}
	expiryList struct {
		Expired []Expiry `json:"expired"`
	}
)

func listAccounts(api API, w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r, "kind"); err != nil {
		return err
	}
	list, err := api.ListAccounts(r.Context(), r.URL.Query().Get("kind"))
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, accountList{list})
}

func createUser(api API, w http.ResponseWriter, r *http.Request) error {
	var u NewUser
	if err := decode(w, r, &u); err != nil {
		return err
	}
	a, password, err := api.CreateUser(r.Context(), u)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/berth/v1/accounts/"+a.Name)
	return reply(w, http.StatusCreated, created{Account: a, Password: password})
}

func getAccount(api API, w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r); err != nil {
		return err
	}
	a, err := api.Account(r.Context(), r.PathValue("name"))
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, a)
}

func patchAccount(api API, w http.ResponseWriter, r *http.Request) error {
	var p accountPatch
	if err := decode(w, r, &p); err != nil {
		return err
	}
	if p.Groups == nil {
		return invalid("nothing to change: the body names no field (groups)")
	}
	a, err := api.SetGroups(r.Context(), r.PathValue("name"), *p.Groups)
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, a)
}

func deleteAccount(api API, w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r, "kind"); err != nil {
		return err
	}
	if err := api.DeleteAccount(r.Context(), r.PathValue("name"), r.URL.Query().Get("kind")); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func setPassword(api API, w http.ResponseWriter, r *http.Request) error {
	var b passwordBody
	if err := decode(w, r, &b); err != nil {
		return err
	}
	generated, err := api.SetPassword(r.Context(), r.PathValue("name"), b.Password)
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, passwordBody{generated})
}

func listRobots(api API, w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r); err != nil {
		return err
	}
	list, err := api.ListAccounts(r.Context(), metadata.KindRobot)
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, robotList{list})
}

func createRobot(api API, w http.ResponseWriter, r *http.Request) error {
	var nr NewRobot
	if err := decode(w, r, &nr); err != nil {
		return err
	}
	a, secret, err := api.CreateRobot(r.Context(), nr)
	if err != nil {
		return err
	}
	w.Header().Set("Location", "/berth/v1/accounts/"+a.Name)
	return reply(w, http.StatusCreated, created{Account: a, Secret: secret})
}

func listGrants(api API, w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r); err != nil {
		return err
	}
	list, err := api.ListGrants(r.Context())
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, grantList{list})
}

func addGrant(api API, w http.ResponseWriter, r *http.Request) error {
	var b grantBody
	if err := decode(w, r, &b); err != nil {
		return err
	}
	g, err := api.Grant(r.Context(), b.Subject, b.Pattern, b.Actions)
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, g)
}

// revokeGrant takes subject, pattern and actions (comma-separated, optional) from the query: a
// DELETE's body is dropped by some clients and proxies.
func revokeGrant(api API, w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r, "subject", "pattern", "actions"); err != nil {
		return err
	}
	q := r.URL.Query()
	if q.Get("subject") == "" || q.Get("pattern") == "" {
		return invalid("DELETE /berth/v1/grants needs ?subject=...&pattern=...[&actions=pull,push]")
	}
	var actions []string
	if a := q.Get("actions"); a != "" {
		actions = strings.Split(a, ",")
	}
	if err := api.Revoke(r.Context(), q.Get("subject"), q.Get("pattern"), actions); err != nil {
		return err
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func revalidate(api API, w http.ResponseWriter, r *http.Request) error {
	var b revalidateBody
	if err := decode(w, r, &b); err != nil {
		return err
	}
	if b.Repository == "" || b.Tag == "" {
		return invalid("the body needs repository and tag")
	}
	rv, err := api.Revalidate(r.Context(), b.Repository, b.Tag)
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, rv)
}

func evict(api API, w http.ResponseWriter, r *http.Request) error {
	var b evictBody
	if err := decode(w, r, &b); err != nil {
		return err
	}
	if b.Repository == "" || b.Reference == "" {
		return invalid("the body needs repository and reference (a tag or digest)")
	}
	ev, err := api.Evict(r.Context(), b.Repository, b.Reference)
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, ev)
}

func lifecyclePreview(api API, w http.ResponseWriter, r *http.Request) error {
	if err := noQuery(r, "repository"); err != nil {
		return err
	}
	ex, err := api.LifecyclePreview(r.Context(), r.URL.Query().Get("repository"))
	if err != nil {
		return err
	}
	return reply(w, http.StatusOK, expiryList{ex})
}
