package oidc_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/berth/berth/internal/auth/oidc"
)

// githubTrust is a valid trust on GitHub Actions, the default issuer.
func githubTrust() oidc.Trust {
	return oidc.Trust{
		Name:     "acme-app",
		Audience: "https://registry.example.com",
		Conditions: map[string]string{
			"repository": "acme/app",
			"ref":        "refs/heads/main",
		},
		Grants: []oidc.Grant{{Repositories: "acme/app", Actions: []string{"pull", "push"}}},
	}
}

func TestValidateAccepts(t *testing.T) {
	for name, edit := range map[string]func(*oidc.Trust){
		"default":              func(*oidc.Trust) {},
		"explicit github":      func(tr *oidc.Trust) { tr.Issuer = oidc.DefaultIssuer },
		"owner pinned by sub":  func(tr *oidc.Trust) { tr.Conditions = map[string]string{"sub": "repo:acme/*:ref:refs/heads/main"} },
		"owner name":           func(tr *oidc.Trust) { tr.Conditions = map[string]string{"repository_owner": "acme"} },
		"owner id":             func(tr *oidc.Trust) { tr.Conditions = map[string]string{"repository_owner_id": "1000001"} },
		"repository id":        func(tr *oidc.Trust) { tr.Conditions = map[string]string{"repository_id": "690000001", "ref": "*"} },
		"repository glob":      func(tr *oidc.Trust) { tr.Conditions = map[string]string{"repository": "acme/*"} },
		"workflow with spaces": func(tr *oidc.Trust) { tr.Conditions["workflow"] = "Build and push" },
		"other issuer, any condition": func(tr *oidc.Trust) {
			tr.Issuer = "https://gitlab.example.com"
			tr.Conditions = map[string]string{"project_path": "acme/*"}
		},
		"loopback http issuer": func(tr *oidc.Trust) { tr.Issuer = "http://127.0.0.1:8080" },
		"localhost issuer":     func(tr *oidc.Trust) { tr.Issuer = "http://localhost:8080/issuer" },
		"ipv6 loopback":        func(tr *oidc.Trust) { tr.Issuer = "http://[::1]:8080" },
		"several grants": func(tr *oidc.Trust) {
			tr.Grants = []oidc.Grant{
				{Repositories: "*", Actions: []string{"pull"}},
				{Repositories: "acme/*-staging", Actions: []string{"push", "delete"}},
			}
		},
		"name chars": func(tr *oidc.Trust) { tr.Name = "Acme_app.prod-2" },
	} {
		tr := githubTrust()
		edit(&tr)
		if err := tr.Validate(); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestValidateRefuses(t *testing.T) {
	for name, c := range map[string]struct {
		edit func(*oidc.Trust)
		want string
	}{
		"no name":              {func(tr *oidc.Trust) { tr.Name = "" }, "name is required"},
		"name with colon":      {func(tr *oidc.Trust) { tr.Name = "acme:app" }, "name"},
		"name with space":      {func(tr *oidc.Trust) { tr.Name = "acme app" }, "name"},
		"name starts with dot": {func(tr *oidc.Trust) { tr.Name = ".acme" }, "name"},
		"name too long":        {func(tr *oidc.Trust) { tr.Name = strings.Repeat("a", 65) }, "name"},
		"no audience":          {func(tr *oidc.Trust) { tr.Audience = "" }, "audience is required"},
		"audience with space":  {func(tr *oidc.Trust) { tr.Audience = "a b" }, "audience"},
		"no conditions":        {func(tr *oidc.Trust) { tr.Conditions = nil }, "at least one condition"},
		"empty conditions":     {func(tr *oidc.Trust) { tr.Conditions = map[string]string{} }, "at least one condition"},
		"only wildcards": {func(tr *oidc.Trust) {
			tr.Issuer = "https://gitlab.example.com"
			tr.Conditions = map[string]string{"sub": "*", "project_path": "**"}
		}, "more than a wildcard"},
		"github without owner": {func(tr *oidc.Trust) {
			tr.Conditions = map[string]string{"ref": "refs/heads/main", "environment": "production"}
		}, "fixes the repository owner"},
		"github owner glob": {func(tr *oidc.Trust) {
			tr.Conditions = map[string]string{"repository": "acme*/app"}
		}, "fixes the repository owner"},
		"github sub any owner": {func(tr *oidc.Trust) {
			tr.Conditions = map[string]string{"sub": "repo:*/app:ref:refs/heads/main"}
		}, "fixes the repository owner"},
		"github reusable workflow only": {func(tr *oidc.Trust) {
			tr.Conditions = map[string]string{"job_workflow_ref": "acme/wf/.github/workflows/push.yml@refs/heads/main"}
		}, "fixes the repository owner"},
		"empty pattern":      {func(tr *oidc.Trust) { tr.Conditions["environment"] = "" }, `condition "environment": pattern is empty`},
		"control in pattern": {func(tr *oidc.Trust) { tr.Conditions["ref"] = "refs/heads/main\n" }, "control character"},
		"long pattern":       {func(tr *oidc.Trust) { tr.Conditions["ref"] = strings.Repeat("x", 513) }, "longer than"},
		"bad utf-8 pattern":  {func(tr *oidc.Trust) { tr.Conditions["ref"] = "\xff" }, "UTF-8"},
		"empty claim name":   {func(tr *oidc.Trust) { tr.Conditions[""] = "x" }, "claim name"},
		"claim name space":   {func(tr *oidc.Trust) { tr.Conditions["a b"] = "x" }, "claim name"},
		"http issuer":        {func(tr *oidc.Trust) { tr.Issuer = "http://issuer.example.com" }, "https"},
		"ftp issuer":         {func(tr *oidc.Trust) { tr.Issuer = "ftp://issuer.example.com" }, "https"},
		"relative issuer":    {func(tr *oidc.Trust) { tr.Issuer = "issuer.example.com" }, "absolute URL"},
		"issuer with query":  {func(tr *oidc.Trust) { tr.Issuer = "https://issuer.example.com/?x=1" }, "query"},
		"issuer with user":   {func(tr *oidc.Trust) { tr.Issuer = "https://u:p@issuer.example.com" }, "credentials"},
		"no grants":          {func(tr *oidc.Trust) { tr.Grants = nil }, "at least one grant"},
		"no actions":         {func(tr *oidc.Trust) { tr.Grants[0].Actions = nil }, "at least one action"},
		"admin action":       {func(tr *oidc.Trust) { tr.Grants[0].Actions = []string{"pull", "admin"} }, `unknown action "admin"`},
		"upper-case action":  {func(tr *oidc.Trust) { tr.Grants[0].Actions = []string{"Push"} }, `unknown action "Push"`},
		"star action":        {func(tr *oidc.Trust) { tr.Grants[0].Actions = []string{"*"} }, `unknown action "*"`},
		"empty repository":   {func(tr *oidc.Trust) { tr.Grants[0].Repositories = "" }, "repositories: pattern is empty"},
		"upper repository":   {func(tr *oidc.Trust) { tr.Grants[0].Repositories = "Acme/*" }, "not a repository name"},
		"double slash":       {func(tr *oidc.Trust) { tr.Grants[0].Repositories = "acme//app" }, "not a repository name"},
		"leading slash":      {func(tr *oidc.Trust) { tr.Grants[0].Repositories = "/acme" }, "not a repository name"},
		"trailing slash":     {func(tr *oidc.Trust) { tr.Grants[0].Repositories = "acme/" }, "not a repository name"},
		"space repository":   {func(tr *oidc.Trust) { tr.Grants[0].Repositories = "acme app" }, "not a repository name"},
	} {
		tr := githubTrust()
		tr.Conditions = map[string]string{"repository": "acme/app", "ref": "refs/heads/main"}
		tr.Grants = []oidc.Grant{{Repositories: "acme/app", Actions: []string{"pull", "push"}}}
		c.edit(&tr)
		err := tr.Validate()
		if err == nil {
			t.Errorf("%s: Validate accepted %+v", name, tr)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q does not say %q", name, err, c.want)
		}
	}
}

func TestValidateReportsEverything(t *testing.T) {
	err := oidc.Trust{Grants: []oidc.Grant{{Repositories: "x", Actions: []string{"fly"}}}}.Validate()
	if err == nil {
		t.Fatal("accepted an empty trust")
	}
	for _, want := range []string{"name is required", "audience is required", "at least one condition", `unknown action "fly"`} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

// failTransport fails the test if anything goes on the network.
type failTransport struct{ t *testing.T }

func (f failTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	f.t.Errorf("unexpected request to %s", r.URL)
	return nil, errors.New("no network in this test")
}

func TestNew(t *testing.T) {
	client := &http.Client{Transport: failTransport{t}}
	// A valid configuration, GitHub by default: nothing is contacted.
	second := githubTrust()
	second.Name = "acme-web"
	second.Conditions = map[string]string{"repository": "acme/web"}
	f, err := oidc.New([]oidc.Trust{githubTrust(), second}, client)
	if err != nil || f == nil {
		t.Fatalf("New: %v", err)
	}
	if _, err := oidc.New(nil, nil); err != nil {
		t.Fatalf("New with no trusts: %v", err)
	}

	// Names are unique.
	_, err = oidc.New([]oidc.Trust{githubTrust(), githubTrust()}, client)
	if err == nil || !strings.Contains(err.Error(), "defined twice") {
		t.Fatalf("duplicate names: %v", err)
	}
	// Every trust is validated.
	bad := githubTrust()
	bad.Audience = ""
	if _, err := oidc.New([]oidc.Trust{githubTrust(), bad}, client); err == nil || !strings.Contains(err.Error(), "audience") {
		t.Fatalf("invalid trust: %v", err)
	}
}

func TestNewCopiesConfiguration(t *testing.T) {
	iss := newIssuer(t)
	tr := localTrust("app", iss, map[string]string{"repository": "acme/app"})
	trusts := []oidc.Trust{tr}
	f, err := oidc.New(trusts, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Changing the caller's configuration afterwards changes nothing.
	tr.Conditions["repository"] = "*"
	tr.Grants[0].Actions[0] = "delete"
	trusts[0].Audience = "other"

	id, err := f.Verify(t.Context(), iss.Sign(ghClaims("acme/app", "refs/heads/main")))
	if err != nil {
		t.Fatal(err)
	}
	if id.Grants[0].Actions[0] != "pull" {
		t.Fatalf("grants follow the caller's slice: %+v", id.Grants)
	}
	if _, err := f.Verify(t.Context(), iss.Sign(ghClaims("acme/web", "refs/heads/main"))); !errors.Is(err, oidc.ErrConditions) {
		t.Fatalf("conditions follow the caller's map: %v", err)
	}
}
