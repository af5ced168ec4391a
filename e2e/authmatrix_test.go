package e2e

// The authorization matrix over real HTTP: identities × repositories × actions, each with Basic
// credentials on the request and with a Bearer token from /token, against a table of the exact
// statuses berth must answer. Refusals must not leak names: what a caller is told about a
// private repository it cannot see is byte for byte what it is told about one that does not exist.

import (
	"encoding/json"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The actions of the matrix, in the order of the table's columns.
var matrixActions = []string{"pull", "blob", "head", "tags", "referrers", "upload", "put", "delete"}

// matrixWant is the status each identity gets for each action (columns as matrixActions) on
// each repository, with credentials on the request and with a token alike. "-" is not tried.
// secret/ghost does not exist.
//
// The grants: boss (user) admin on *; puller (robot) pull on team/*; pusher (robot) pull,push
// on team/app; dave (user) in group devs, which has pull,push,delete on dev/*; nobody (robot)
// nothing; anonymous pull on public/*, which every identity has too.
var matrixWant = map[string]map[string]string{
	"anonymous": {
		"team/app":     "401 401 401 401 401 401 401 401",
		"team/other":   "401 401 401 401 401 401 401 401",
		"dev/x":        "401 401 401 401 401 401 401 401",
		"public/lib":   "200 200 200 200 200 401 401 401",
		"secret/thing": "401 401 401 401 401 401 401 401",
		"secret/ghost": "401 401 401 401 401 401 401 401",
	},
	"boss": {
		"team/app":     "200 200 200 200 200 202 201 202",
		"team/other":   "200 200 200 200 200 202 201 202",
		"dev/x":        "200 200 200 200 200 202 201 202",
		"public/lib":   "200 200 200 200 200 202 201 202",
		"secret/thing": "200 200 200 200 200 202 201 202",
		// Allowed, but there is nothing: the handlers' own 404s. (A PUT would create it.)
		"secret/ghost": "404 404 404 404 200 202 - 404",
	},
	"puller": {
		"team/app":     "200 200 200 200 200 403 403 403",
		"team/other":   "200 200 200 200 200 403 403 403",
		"dev/x":        "404 404 404 404 404 403 403 403",
		"public/lib":   "200 200 200 200 200 403 403 403",
		"secret/thing": "404 404 404 404 404 403 403 403",
		"secret/ghost": "404 404 404 404 404 403 403 403",
	},
	"pusher": {
		"team/app":     "200 200 200 200 200 202 201 403",
		"team/other":   "404 404 404 404 404 403 403 403",
		"dev/x":        "404 404 404 404 404 403 403 403",
		"public/lib":   "200 200 200 200 200 403 403 403",
		"secret/thing": "404 404 404 404 404 403 403 403",
		"secret/ghost": "404 404 404 404 404 403 403 403",
	},
	"dave": {
		"team/app":     "404 404 404 404 404 403 403 403",
		"team/other":   "404 404 404 404 404 403 403 403",
		"dev/x":        "200 200 200 200 200 202 201 202",
		"public/lib":   "200 200 200 200 200 403 403 403",
		"secret/thing": "404 404 404 404 404 403 403 403",
		"secret/ghost": "404 404 404 404 404 403 403 403",
	},
	"nobody": {
		"team/app":     "404 404 404 404 404 403 403 403",
		"team/other":   "404 404 404 404 404 403 403 403",
		"dev/x":        "404 404 404 404 404 403 403 403",
		"public/lib":   "200 200 200 200 200 403 403 403",
		"secret/thing": "404 404 404 404 404 403 403 403",
		"secret/ghost": "404 404 404 404 404 403 403 403",
	},
}

// matrixCatalog is what each identity's /v2/_catalog lists (nil: 401, credentials required).
var matrixCatalog = map[string][]string{
	"anonymous": nil,
	"boss":      {"dev/x", "public/lib", "secret/thing", "team/app", "team/other"},
	"puller":    {"public/lib", "team/app", "team/other"},
	"pusher":    {"public/lib", "team/app"},
	"dave":      {"dev/x", "public/lib"},
	"nobody":    {"public/lib"},
}

const matrixGhost = "secret/ghost"

var matrixRepos = []string{"team/app", "team/other", "dev/x", "public/lib", "secret/thing", matrixGhost}

// matrixIdentity is a caller: user "" is anonymous.
type matrixIdentity struct{ name, user, pass string }

// matrixSeed is what the admin pushed to a repository.
type matrixSeed struct {
	img authImage
	del map[string]string // identity/mode -> digest of a manifest only that caller deletes
}

func TestAuthMatrix(t *testing.T) {
	b := startSecureBerth(t)
	admin := basicAuth("admin", b.AdminPassword())

	bossPass := strings.TrimSpace(b.Admin("user", "add", "boss"))
	b.Admin("grant", "user:boss", "*", "admin")
	davePass := strings.TrimSpace(b.Admin("user", "add", "dave", "--groups", "devs"))
	b.Admin("grant", "group:devs", "dev/*", "pull,push,delete")
	b.Admin("grant", "anonymous", "public/*", "pull")
	ids := []matrixIdentity{
		{"anonymous", "", ""},
		{"boss", "boss", bossPass},
		{"puller", "puller", authRobot(b, "puller", "team/*", "pull")},
		{"pusher", "pusher", authRobot(b, "pusher", "team/app", "pull,push")},
		{"dave", "dave", davePass},
		{"nobody", "nobody", authRobot(b, "nobody")},
	}
	modes := []string{"credentials", "token"}

	// Seed every repository but the ghost: v1, and for each caller and mode a manifest of its
	// own to delete, so that no caller's delete changes what another caller sees.
	seeds := map[string]*matrixSeed{}
	for _, repo := range matrixRepos {
		if repo == matrixGhost {
			continue
		}
		s := &matrixSeed{img: authPushImage(t, b, admin, repo, "v1", "content of "+repo+"\n"), del: map[string]string{}}
		var m map[string]any
		if err := json.Unmarshal(s.img.Body, &m); err != nil {
			t.Fatal(err)
		}
		for _, id := range ids {
			for _, mode := range modes {
				m["annotations"] = map[string]string{"test.berth.deleted-by": id.name + "/" + mode}
				body, err := json.Marshal(m)
				if err != nil {
					t.Fatal(err)
				}
				if r := authPutManifest(t, b, admin, repo, "del-"+id.name+"-"+mode, body); r.Status != http.StatusCreated {
					t.Fatalf("seed %s: %s", repo, r)
				}
				s.del[id.name+"/"+mode] = clDigest(body)
			}
		}
		seeds[repo] = s
	}
	// The ghost is asked for exactly what secret/thing is asked for.
	seeds[matrixGhost] = seeds["secret/thing"]

	tokens := map[string]string{}
	token := func(id matrixIdentity, scope string) string {
		key := id.name + " " + scope
		if tokens[key] == "" {
			tokens[key] = authToken(t, b, id.user, id.pass, scope)
		}
		return tokens[key]
	}
	authz := func(id matrixIdentity, mode, scope string) string {
		if mode == "token" {
			return bearerAuth(token(id, scope))
		}
		if id.user == "" {
			return ""
		}
		return basicAuth(id.user, id.pass)
	}

	t.Run("catalog", func(t *testing.T) {
		for _, id := range ids {
			for _, mode := range modes {
				r := authDo(t, http.MethodGet, b.URL()+"/v2/_catalog", authz(id, mode, "registry:catalog:*"), nil)
				want := matrixCatalog[id.name]
				if want == nil {
					if r.Status != http.StatusUnauthorized || r.errorCode() != "UNAUTHORIZED" {
						t.Errorf("%s (%s): catalog %s, want 401 UNAUTHORIZED", id.name, mode, r)
					}
					continue
				}
				var c struct {
					Repositories []string `json:"repositories"`
				}
				if r.Status != http.StatusOK || json.Unmarshal(r.Body, &c) != nil {
					t.Errorf("%s (%s): catalog %s", id.name, mode, r)
					continue
				}
				if !slices.Equal(c.Repositories, want) {
					t.Errorf("%s (%s): catalog %q, want %q", id.name, mode, c.Repositories, want)
				}
			}
		}
	})

	// do sends one action of the matrix and returns the response and the status that means success.
	do := func(id matrixIdentity, mode, repo, action string) authResp {
		s := seeds[repo]
		base := b.URL() + "/v2/" + repo
		read := "repository:" + repo + ":pull"
		write := "repository:" + repo + ":pull,push"
		switch action {
		case "pull":
			return authDo(t, http.MethodGet, base+"/manifests/v1", authz(id, mode, read), nil, "Accept", clAcceptAll)
		case "blob":
			return authDo(t, http.MethodGet, base+"/blobs/"+s.img.Layer, authz(id, mode, read), nil)
		case "head":
			return authDo(t, http.MethodHead, base+"/manifests/v1", authz(id, mode, read), nil, "Accept", clAcceptAll)
		case "tags":
			return authDo(t, http.MethodGet, base+"/tags/list", authz(id, mode, read), nil)
		case "referrers":
			return authDo(t, http.MethodGet, base+"/referrers/"+s.img.Manifest, authz(id, mode, read), nil)
		case "upload":
			return authDo(t, http.MethodPost, base+"/blobs/uploads/", authz(id, mode, write), nil)
		case "put":
			return authDo(t, http.MethodPut, base+"/manifests/put-"+id.name+"-"+mode, authz(id, mode, write), s.img.Body, "Content-Type", clOCIManifest)
		case "delete":
			return authDo(t, http.MethodDelete, base+"/manifests/"+s.del[id.name+"/"+mode], authz(id, mode, "repository:"+repo+":delete"), nil)
		}
		t.Fatalf("unknown action %s", action)
		return authResp{}
	}

	// Run the matrix, keeping every response for the comparisons below.
	type cell struct{ id, mode, repo, action string }
	got := map[cell]authResp{}
	cells, bad := 0, 0
	for _, id := range ids {
		for _, mode := range modes {
			for _, repo := range matrixRepos {
				want := strings.Fields(matrixWant[id.name][repo])
				if len(want) != len(matrixActions) {
					t.Fatalf("matrixWant[%s][%s] has %d columns", id.name, repo, len(want))
				}
				for i, action := range matrixActions {
					if want[i] == "-" {
						continue
					}
					r := do(id, mode, repo, action)
					got[cell{id.name, mode, repo, action}] = r
					cells++
					if ok := matrixCheck(t, r, id.name, mode, repo, action, want[i], seeds[repo]); !ok {
						bad++
					}
				}
			}
		}
	}
	t.Logf("%d cells (%d identities × %d modes × %d repositories × %d actions), %d wrong", cells, len(ids), len(modes), len(matrixRepos), len(matrixActions), bad)

	// A refusal about secret/thing (exists, private) must be the one about secret/ghost (does not
	// exist): same status, same body, same headers but for the name the client itself sent.
	compared := 0
	for _, id := range ids {
		for _, mode := range modes {
			for _, action := range matrixActions {
				a, okA := got[cell{id.name, mode, "secret/thing", action}]
				g, okG := got[cell{id.name, mode, matrixGhost, action}]
				if !okA || !okG || a.Status < 400 {
					continue
				}
				compared++
				where := id.name + " (" + mode + ") " + action
				if a.Status != g.Status || string(a.Body) != string(g.Body) {
					t.Errorf("%s: secret/thing answers %s, secret/ghost %s: the refusal tells them apart", where, a, g)
				}
				ha, hg := matrixHeaders(a.Header, "secret/thing"), matrixHeaders(g.Header, matrixGhost)
				if !slices.Equal(ha, hg) {
					t.Errorf("%s: headers differ:\nsecret/thing %q\nsecret/ghost %q", where, ha, hg)
				}
			}
		}
	}
	t.Logf("%d refusals of an existing private repository are identical to those of a missing one", compared)

	t.Run("token-for-another-scope", func(t *testing.T) {
		puller := ids[2]
		tok := bearerAuth(token(puller, "repository:team/app:pull"))
		// Allowed by the grants, not by this token: a challenge for the right scope.
		r := authGetManifest(t, b, tok, "team/other", "v1")
		if r.Status != http.StatusUnauthorized || !strings.Contains(r.Header.Get("WWW-Authenticate"), `scope="repository:team/other:pull"`) ||
			!strings.Contains(r.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
			t.Errorf("team/app token on team/other: %s %q, want 401 insufficient_scope", r, r.Header.Get("WWW-Authenticate"))
		}
		// Not allowed at all: the same 404 as without the token's help.
		r = authGetManifest(t, b, tok, "secret/thing", "v1")
		if want := got[cell{"puller", "token", "secret/thing", "pull"}]; r.Status != want.Status || string(r.Body) != string(want.Body) {
			t.Errorf("team/app token on secret/thing: %s, want %s", r, want)
		}
		// A pull token does not push, even where the grants would allow it.
		pusher := ids[3]
		r = authDo(t, http.MethodPost, b.URL()+"/v2/team/app/blobs/uploads/", bearerAuth(token(pusher, "repository:team/app:pull")), nil)
		if r.Status != http.StatusUnauthorized || !strings.Contains(r.Header.Get("WWW-Authenticate"), `error="insufficient_scope"`) {
			t.Errorf("pull token used to push: %s %q, want 401 insufficient_scope", r, r.Header.Get("WWW-Authenticate"))
		}
	})

	// What a caller may reach in its own repository does not reach into another's: a digest
	// or an upload session of secret/thing, asked for through team/app.
	t.Run("cross-repository", func(t *testing.T) {
		pusher := basicAuth("pusher", ids[3].pass)
		secretLayer := seeds["secret/thing"].img.Layer
		if r := authDo(t, http.MethodGet, b.URL()+"/v2/team/app/blobs/"+secretLayer, pusher, nil); r.Status != http.StatusNotFound || r.errorCode() != "BLOB_UNKNOWN" {
			t.Errorf("secret/thing's layer through team/app: %s, want 404 BLOB_UNKNOWN", r)
		}
		r := authDo(t, http.MethodPost, b.URL()+"/v2/secret/thing/blobs/uploads/", admin, nil)
		if r.Status != http.StatusAccepted {
			t.Fatalf("admin upload to secret/thing: %s", r)
		}
		id := r.Header.Get("Docker-Upload-Uuid")
		for _, method := range []string{http.MethodGet, http.MethodPatch, http.MethodPut, http.MethodDelete} {
			u := b.URL() + "/v2/team/app/blobs/uploads/" + id
			if method == http.MethodPut {
				u += "?digest=" + clDigest([]byte("x"))
			}
			r := authDo(t, method, u, pusher, []byte("x"), "Content-Type", "application/octet-stream")
			if r.Status != http.StatusNotFound || r.errorCode() != "BLOB_UPLOAD_UNKNOWN" {
				t.Errorf("%s secret/thing's upload session through team/app: %s, want 404 BLOB_UPLOAD_UNKNOWN", method, r)
			}
		}
	})
}

// matrixCheck checks one response against the status the table wants; it reports whether it
// was right.
func matrixCheck(t *testing.T, r authResp, who, mode, repo, action, want string, s *matrixSeed) bool {
	t.Helper()
	where := who + " (" + mode + ") " + action + " " + repo
	if strconv.Itoa(r.Status) != want {
		t.Errorf("%s: %s, want %s", where, r, want)
		return false
	}
	head := action == "head"
	switch want {
	case "401":
		ch := r.Header.Get("WWW-Authenticate")
		if !strings.HasPrefix(ch, `Bearer realm="`) || !strings.Contains(ch, `scope="repository:`+repo+`:`) {
			t.Errorf("%s: 401 with challenge %q", where, ch)
			return false
		}
		if !head && r.errorCode() != "UNAUTHORIZED" {
			t.Errorf("%s: 401 %s, want UNAUTHORIZED", where, r.Body)
			return false
		}
	case "403":
		if r.errorCode() != "DENIED" {
			t.Errorf("%s: 403 %s, want DENIED", where, r.Body)
			return false
		}
	case "404":
		if !head && repo != matrixGhost && r.errorCode() != "NAME_UNKNOWN" {
			t.Errorf("%s: 404 %s, want NAME_UNKNOWN", where, r.Body)
			return false
		}
		if !head && repo == matrixGhost && who != "boss" && r.errorCode() != "NAME_UNKNOWN" {
			t.Errorf("%s: 404 %s, want NAME_UNKNOWN", where, r.Body)
			return false
		}
	case "200":
		switch action {
		case "pull":
			if clDigest(r.Body) != s.img.Manifest {
				t.Errorf("%s: manifest digest %s, want %s", where, clDigest(r.Body), s.img.Manifest)
				return false
			}
		case "blob":
			if clDigest(r.Body) != s.img.Layer {
				t.Errorf("%s: blob digest %s, want %s", where, clDigest(r.Body), s.img.Layer)
				return false
			}
		case "head":
			if r.Header.Get("Docker-Content-Digest") != s.img.Manifest {
				t.Errorf("%s: Docker-Content-Digest %q", where, r.Header.Get("Docker-Content-Digest"))
				return false
			}
		case "tags":
			if !strings.Contains(string(r.Body), `"v1"`) {
				t.Errorf("%s: tags %s", where, r.Body)
				return false
			}
		}
	}
	return true
}

// matrixHeaders lists a response's headers as "Name: value" with the repository name replaced
// and the Date left out.
func matrixHeaders(h http.Header, repo string) []string {
	var out []string
	for k, vs := range h {
		if k == "Date" {
			continue
		}
		for _, v := range vs {
			out = append(out, k+": "+strings.ReplaceAll(v, repo, "REPO"))
		}
	}
	slices.Sort(out)
	return out
}
