package metadatatest

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/berth/berth/internal/metadata"
)

// RunAccounts runs the conformance suite of metadata.Accounts. open returns a new, empty store;
// it closes the store with t.Cleanup.
//
//	func TestAccountsConformance(t *testing.T) { metadatatest.RunAccounts(t, openAccounts) }
func RunAccounts(t *testing.T, open func(t *testing.T) metadata.Accounts) {
	s := accountsSuite{open: open}
	t.Run("CreateGet", s.createGet)
	t.Run("CreateDuplicate", s.createDuplicate)
	t.Run("List", s.list)
	t.Run("Update", s.update)
	t.Run("UpdateSecretDropsRefreshTokens", s.updateSecretDropsRefreshTokens)
	t.Run("Delete", s.delete)
	t.Run("Count", s.count)
	t.Run("AddGrant", s.addGrant)
	t.Run("RevokeGrant", s.revokeGrant)
	t.Run("RefreshTokens", s.refreshTokens)
	t.Run("Settings", s.settings)
	t.Run("ConcurrentCreateSetting", s.concurrentCreateSetting)
	t.Run("ConcurrentCreateAccount", s.concurrentCreateAccount)
	t.Run("ConcurrentAddGrant", s.concurrentAddGrant)
	t.Run("AuthVersion", s.authVersion)
}

type accountsSuite struct {
	open func(t *testing.T) metadata.Accounts
}

// second is a time that every backend can store exactly.
func second(t time.Time) time.Time { return t.Truncate(time.Second) }

func createAccount(t *testing.T, st metadata.Accounts, a *metadata.Account) {
	t.Helper()
	if err := st.CreateAccount(ctx, a); err != nil {
		t.Fatalf("CreateAccount(%s): %v", a.Name, err)
	}
}

func getAccount(t *testing.T, st metadata.Accounts, name string) *metadata.Account {
	t.Helper()
	a, err := st.Account(ctx, name)
	if err != nil {
		t.Fatalf("Account(%s): %v", name, err)
	}
	return a
}

// wantAccount checks the stored fields of got against want (Created is the store's own).
func wantAccount(t *testing.T, got, want *metadata.Account) {
	t.Helper()
	if got.Name != want.Name || got.Kind != want.Kind || got.Secret != want.Secret || got.Description != want.Description {
		t.Errorf("account = {%q %q %q %q}, want {%q %q %q %q}", got.Name, got.Kind, got.Secret, got.Description,
			want.Name, want.Kind, want.Secret, want.Description)
	}
	wantStrings(t, "account "+want.Name+" groups", got.Groups, want.Groups)
	if !got.Expires.Equal(want.Expires) {
		t.Errorf("account %s expires %v, want %v", want.Name, got.Expires, want.Expires)
	}
	if got.Created.IsZero() {
		t.Errorf("account %s: Created is zero", want.Name)
	}
	if len(got.ID) < 16 {
		t.Errorf("account %s: ID %q, want one of at least 16 characters", want.Name, got.ID)
	}
}

func grants(t *testing.T, st metadata.Accounts) []metadata.Grant {
	t.Helper()
	gs, err := st.Grants(ctx)
	if err != nil {
		t.Fatalf("Grants: %v", err)
	}
	return gs
}

// grantStrings renders grants as "subject pattern actions" for comparisons.
func grantStrings(gs []metadata.Grant) []string {
	out := make([]string, 0, len(gs))
	for _, g := range gs {
		out = append(out, fmt.Sprintf("%s %s %v", g.Subject, g.Pattern, g.Actions))
	}
	return out
}

func wantGrants(t *testing.T, st metadata.Accounts, want ...string) {
	t.Helper()
	wantStrings(t, "Grants", grantStrings(grants(t, st)), want)
}

func addGrant(t *testing.T, st metadata.Accounts, subject, pattern string, actions ...string) {
	t.Helper()
	if err := st.AddGrant(ctx, metadata.Grant{Subject: subject, Pattern: pattern, Actions: actions}); err != nil {
		t.Fatalf("AddGrant(%s, %s, %v): %v", subject, pattern, actions, err)
	}
}

func createRefreshToken(t *testing.T, st metadata.Accounts, hash, account string, expires time.Time) {
	t.Helper()
	if err := st.CreateRefreshToken(ctx, hash, account, expires); err != nil {
		t.Fatalf("CreateRefreshToken(%s, %s): %v", hash, account, err)
	}
}

func wantRefreshToken(t *testing.T, st metadata.Accounts, hash, account string) {
	t.Helper()
	got, err := st.RefreshToken(ctx, hash)
	if account == "" {
		if !errors.Is(err, metadata.ErrNotFound) {
			t.Errorf("RefreshToken(%s) = %q, %v; want ErrNotFound", hash, got, err)
		}
		return
	}
	if err != nil || got != account {
		t.Errorf("RefreshToken(%s) = %q, %v; want %q", hash, got, err, account)
	}
}

func (s accountsSuite) createGet(t *testing.T) {
	st := s.open(t)
	if a, err := st.Account(ctx, "alice"); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("Account of an empty store = %v, %v; want ErrNotFound", a, err)
	}
	before := time.Now().Add(-time.Minute)
	alice := &metadata.Account{Name: "alice", Kind: metadata.KindUser, Secret: "$argon2id$hash",
		Groups: []string{"devs", "ops"}, Description: "Alice, the admin"}
	createAccount(t, st, alice)
	ci := &metadata.Account{Name: "ci", Kind: metadata.KindRobot, Secret: "$sha256$abc",
		Description: "CI", Expires: second(time.Now().Add(24 * time.Hour))}
	createAccount(t, st, ci)

	got := getAccount(t, st, "alice")
	wantAccount(t, got, alice)
	if got.Created.Before(before) || got.Created.After(time.Now().Add(time.Minute)) {
		t.Errorf("alice created %v, want about now", got.Created)
	}
	if !got.Expires.IsZero() {
		t.Errorf("alice expires %v, want zero (never)", got.Expires)
	}
	got = getAccount(t, st, "ci")
	wantAccount(t, got, ci)
	if len(got.Groups) != 0 {
		t.Errorf("ci groups = %q, want none", got.Groups)
	}
	// Names are exact.
	for _, name := range []string{"Alice", "alic", "alice ", ""} {
		if a, err := st.Account(ctx, name); !errors.Is(err, metadata.ErrNotFound) {
			t.Errorf("Account(%q) = %v, %v; want ErrNotFound", name, a, err)
		}
	}
}

func (s accountsSuite) createDuplicate(t *testing.T) {
	st := s.open(t)
	createAccount(t, st, &metadata.Account{Name: "alice", Kind: metadata.KindUser, Secret: "first"})
	// Users and robots share one namespace.
	for _, kind := range []string{metadata.KindUser, metadata.KindRobot} {
		err := st.CreateAccount(ctx, &metadata.Account{Name: "alice", Kind: kind, Secret: "second"})
		if !errors.Is(err, metadata.ErrExists) {
			t.Errorf("CreateAccount(alice, %s) again: %v; want ErrExists", kind, err)
		}
	}
	if got := getAccount(t, st, "alice"); got.Secret != "first" || got.Kind != metadata.KindUser {
		t.Errorf("after a refused duplicate, alice = %s %q; want the first account", got.Kind, got.Secret)
	}
	if n, err := st.CountAccounts(ctx); err != nil || n != 1 {
		t.Errorf("CountAccounts = %d, %v; want 1", n, err)
	}
}

func (s accountsSuite) list(t *testing.T) {
	st := s.open(t)
	for _, kind := range []string{"", metadata.KindUser, metadata.KindRobot} {
		if as, err := st.ListAccounts(ctx, kind); err != nil || len(as) != 0 {
			t.Errorf("ListAccounts(%q) of an empty store = %v, %v; want none", kind, as, err)
		}
	}
	for _, a := range []struct{ name, kind string }{
		{"zed", metadata.KindUser}, {"build", metadata.KindRobot}, {"alice", metadata.KindUser},
		{"deploy", metadata.KindRobot}, {"bob", metadata.KindUser},
	} {
		createAccount(t, st, &metadata.Account{Name: a.name, Kind: a.kind, Secret: "s-" + a.name})
	}
	names := func(kind string) []string {
		as, err := st.ListAccounts(ctx, kind)
		if err != nil {
			t.Fatalf("ListAccounts(%q): %v", kind, err)
		}
		var out []string
		for _, a := range as {
			if kind != "" && a.Kind != kind {
				t.Errorf("ListAccounts(%q) lists %s of kind %s", kind, a.Name, a.Kind)
			}
			if a.Secret != "s-"+a.Name || a.Created.IsZero() {
				t.Errorf("ListAccounts(%q): %s has secret %q, created %v", kind, a.Name, a.Secret, a.Created)
			}
			out = append(out, a.Name)
		}
		return out
	}
	wantStrings(t, "ListAccounts(all)", names(""), []string{"alice", "bob", "build", "deploy", "zed"})
	wantStrings(t, "ListAccounts(user)", names(metadata.KindUser), []string{"alice", "bob", "zed"})
	wantStrings(t, "ListAccounts(robot)", names(metadata.KindRobot), []string{"build", "deploy"})
	wantStrings(t, "ListAccounts(group)", names("group"), nil)
}

func (s accountsSuite) update(t *testing.T) {
	st := s.open(t)
	if err := st.UpdateAccount(ctx, &metadata.Account{Name: "ghost", Kind: metadata.KindUser, Secret: "x"}); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("UpdateAccount(ghost): %v; want ErrNotFound", err)
	}
	createAccount(t, st, &metadata.Account{Name: "ci", Kind: metadata.KindRobot, Secret: "old",
		Groups: []string{"builders"}, Description: "before", Expires: second(time.Now().Add(time.Hour))})
	created, id := getAccount(t, st, "ci").Created, getAccount(t, st, "ci").ID

	want := &metadata.Account{Name: "ci", Kind: metadata.KindRobot, Secret: "new",
		Groups: []string{"deployers", "readers"}, Description: "after", Expires: second(time.Now().Add(48 * time.Hour))}
	if err := st.UpdateAccount(ctx, want); err != nil {
		t.Fatalf("UpdateAccount: %v", err)
	}
	got := getAccount(t, st, "ci")
	wantAccount(t, got, want)
	if !got.Created.Equal(created) {
		t.Errorf("UpdateAccount changed Created from %v to %v", created, got.Created)
	}
	if got.ID != id {
		t.Errorf("UpdateAccount changed the ID from %q to %q", id, got.ID)
	}

	// Clearing: no groups, no description, no expiry.
	want = &metadata.Account{Name: "ci", Kind: metadata.KindRobot, Secret: "new"}
	if err := st.UpdateAccount(ctx, want); err != nil {
		t.Fatalf("UpdateAccount: %v", err)
	}
	got = getAccount(t, st, "ci")
	wantAccount(t, got, want)
	if !got.Expires.IsZero() || len(got.Groups) != 0 {
		t.Errorf("after clearing, ci expires %v, groups %q; want never and none", got.Expires, got.Groups)
	}
	if n, err := st.CountAccounts(ctx); err != nil || n != 1 {
		t.Errorf("CountAccounts = %d, %v; want 1", n, err)
	}
}

func (s accountsSuite) updateSecretDropsRefreshTokens(t *testing.T) {
	st := s.open(t)
	later := time.Now().Add(time.Hour)
	for _, name := range []string{"alice", "bob"} {
		createAccount(t, st, &metadata.Account{Name: name, Kind: metadata.KindUser, Secret: "pw-" + name})
		createRefreshToken(t, st, "rt-"+name+"-1", name, later)
		createRefreshToken(t, st, "rt-"+name+"-2", name, later)
	}
	// The same secret (a description changed): the refresh tokens stay.
	if err := st.UpdateAccount(ctx, &metadata.Account{Name: "alice", Kind: metadata.KindUser, Secret: "pw-alice", Description: "new"}); err != nil {
		t.Fatal(err)
	}
	wantRefreshToken(t, st, "rt-alice-1", "alice")
	wantRefreshToken(t, st, "rt-alice-2", "alice")
	// A new secret: alice's refresh tokens go, bob's stay.
	if err := st.UpdateAccount(ctx, &metadata.Account{Name: "alice", Kind: metadata.KindUser, Secret: "changed"}); err != nil {
		t.Fatal(err)
	}
	wantRefreshToken(t, st, "rt-alice-1", "")
	wantRefreshToken(t, st, "rt-alice-2", "")
	wantRefreshToken(t, st, "rt-bob-1", "bob")
	wantRefreshToken(t, st, "rt-bob-2", "bob")
	// Tokens made after the change work.
	createRefreshToken(t, st, "rt-alice-3", "alice", later)
	wantRefreshToken(t, st, "rt-alice-3", "alice")
}

func (s accountsSuite) delete(t *testing.T) {
	st := s.open(t)
	if err := st.DeleteAccount(ctx, "ghost"); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("DeleteAccount(ghost): %v; want ErrNotFound", err)
	}
	later := time.Now().Add(time.Hour)
	createAccount(t, st, &metadata.Account{Name: "alice", Kind: metadata.KindUser, Secret: "a", Groups: []string{"alice"}})
	createAccount(t, st, &metadata.Account{Name: "ci", Kind: metadata.KindRobot, Secret: "c"})
	createRefreshToken(t, st, "rt-alice", "alice", later)
	createRefreshToken(t, st, "rt-ci", "ci", later)
	addGrant(t, st, "user:alice", "team/*", "pull", "push")
	addGrant(t, st, "user:alice", "*", "pull")
	addGrant(t, st, "group:alice", "alice/*", "pull")   // a group of the same name is another subject
	addGrant(t, st, "robot:alice", "robots/*", "pull")  // so is a robot of the same name
	addGrant(t, st, "robot:ci", "team/*", "pull")       // another account's
	addGrant(t, st, "user:alice2", "team/*", "pull")    // a name that starts the same
	addGrant(t, st, "anonymous", "public/*", "pull")    // everyone's
	addGrant(t, st, "user:bob", "user:alice", "delete") // a pattern that looks like the subject

	oldID := getAccount(t, st, "alice").ID
	if err := st.DeleteAccount(ctx, "alice"); err != nil {
		t.Fatalf("DeleteAccount(alice): %v", err)
	}
	if a, err := st.Account(ctx, "alice"); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("Account(alice) after delete = %v, %v; want ErrNotFound", a, err)
	}
	wantGrants(t, st,
		"anonymous public/* [pull]",
		"group:alice alice/* [pull]",
		"robot:alice robots/* [pull]",
		"robot:ci team/* [pull]",
		"user:alice2 team/* [pull]",
		"user:bob user:alice [delete]",
	)
	wantRefreshToken(t, st, "rt-alice", "")
	wantRefreshToken(t, st, "rt-ci", "ci")
	if err := st.DeleteAccount(ctx, "alice"); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("second DeleteAccount(alice): %v; want ErrNotFound", err)
	}

	// A robot's grants are robot:NAME's.
	if err := st.DeleteAccount(ctx, "ci"); err != nil {
		t.Fatalf("DeleteAccount(ci): %v", err)
	}
	wantGrants(t, st,
		"anonymous public/* [pull]",
		"group:alice alice/* [pull]",
		"robot:alice robots/* [pull]",
		"user:alice2 team/* [pull]",
		"user:bob user:alice [delete]",
	)
	wantRefreshToken(t, st, "rt-ci", "")

	// The name is free again, and a new alice starts with no grants or tokens.
	createAccount(t, st, &metadata.Account{Name: "alice", Kind: metadata.KindRobot, Secret: "new"})
	// ...and an ID of its own: what was handed out to the old alice is not the new one's.
	if got := getAccount(t, st, "alice"); got.ID == oldID || got.ID == "" {
		t.Errorf("the new alice has ID %q, the deleted one had %q: want a new one", got.ID, oldID)
	}
	if got := getAccount(t, st, "alice"); got.Kind != metadata.KindRobot || got.Secret != "new" {
		t.Errorf("recreated alice = %s %q", got.Kind, got.Secret)
	}
	wantRefreshToken(t, st, "rt-alice", "")
}

func (s accountsSuite) count(t *testing.T) {
	st := s.open(t)
	wantCount := func(want int) {
		t.Helper()
		if n, err := st.CountAccounts(ctx); err != nil || n != want {
			t.Errorf("CountAccounts = %d, %v; want %d", n, err, want)
		}
	}
	wantCount(0)
	createAccount(t, st, &metadata.Account{Name: "a", Kind: metadata.KindUser, Secret: "x"})
	createAccount(t, st, &metadata.Account{Name: "b", Kind: metadata.KindRobot, Secret: "x"})
	wantCount(2)
	st.CreateAccount(ctx, &metadata.Account{Name: "a", Kind: metadata.KindUser, Secret: "x"}) // ErrExists
	wantCount(2)
	// Grants, tokens and settings are not accounts.
	addGrant(t, st, "user:c", "*", "pull")
	if err := st.SetSetting(ctx, "k", []byte("v")); err != nil {
		t.Fatal(err)
	}
	wantCount(2)
	if err := st.DeleteAccount(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	wantCount(1)
}

func (s accountsSuite) addGrant(t *testing.T) {
	st := s.open(t)
	if gs := grants(t, st); len(gs) != 0 {
		t.Errorf("Grants of an empty store = %v", gs)
	}
	before := time.Now().Add(-time.Minute)
	addGrant(t, st, "user:alice", "team/*", "push")
	addGrant(t, st, "user:alice", "team/*", "pull", "push") // push again: merged, not doubled
	wantGrants(t, st, "user:alice team/* [pull push]")
	addGrant(t, st, "user:alice", "team/*", "delete")
	addGrant(t, st, "user:alice", "team/*", "admin", "fetch")
	wantGrants(t, st, "user:alice team/* [admin delete fetch pull push]")

	// Other subjects and patterns are other grants, listed by subject, then pattern.
	addGrant(t, st, "user:alice", "team", "pull")
	addGrant(t, st, "group:devs", "*", "pull")
	addGrant(t, st, "anonymous", "public/*", "pull")
	addGrant(t, st, "robot:ci", "team/*", "push", "pull")
	wantGrants(t, st,
		"anonymous public/* [pull]",
		"group:devs * [pull]",
		"robot:ci team/* [pull push]",
		"user:alice team [pull]",
		"user:alice team/* [admin delete fetch pull push]",
	)
	for _, g := range grants(t, st) {
		if !slices.IsSorted(g.Actions) {
			t.Errorf("grant %s %s: actions %q not sorted", g.Subject, g.Pattern, g.Actions)
		}
		if g.Created.Before(before) || g.Created.After(time.Now().Add(time.Minute)) {
			t.Errorf("grant %s %s: created %v, want about now", g.Subject, g.Pattern, g.Created)
		}
	}
}

func (s accountsSuite) revokeGrant(t *testing.T) {
	st := s.open(t)
	if err := st.RevokeGrant(ctx, "user:alice", "team/*"); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("RevokeGrant of nothing: %v; want ErrNotFound", err)
	}
	addGrant(t, st, "user:alice", "team/*", "pull", "push", "delete")
	addGrant(t, st, "user:alice", "other/*", "pull", "push")
	addGrant(t, st, "user:bob", "team/*", "pull", "push")

	// Some actions.
	if err := st.RevokeGrant(ctx, "user:alice", "team/*", "push"); err != nil {
		t.Fatalf("RevokeGrant(push): %v", err)
	}
	wantGrants(t, st, "user:alice other/* [pull push]", "user:alice team/* [delete pull]", "user:bob team/* [pull push]")
	// An action the grant does not have changes nothing.
	if err := st.RevokeGrant(ctx, "user:alice", "team/*", "admin"); err != nil {
		t.Fatalf("RevokeGrant(admin) that was not granted: %v", err)
	}
	wantGrants(t, st, "user:alice other/* [pull push]", "user:alice team/* [delete pull]", "user:bob team/* [pull push]")
	// Revoking every remaining action by name removes the grant.
	if err := st.RevokeGrant(ctx, "user:alice", "team/*", "pull", "delete"); err != nil {
		t.Fatalf("RevokeGrant(pull, delete): %v", err)
	}
	wantGrants(t, st, "user:alice other/* [pull push]", "user:bob team/* [pull push]")
	if err := st.RevokeGrant(ctx, "user:alice", "team/*", "pull"); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("RevokeGrant of a removed grant: %v; want ErrNotFound", err)
	}
	// No actions: all of them.
	if err := st.RevokeGrant(ctx, "user:bob", "team/*"); err != nil {
		t.Fatalf("RevokeGrant(all): %v", err)
	}
	wantGrants(t, st, "user:alice other/* [pull push]")
	// Patterns and subjects are exact: no wildcard matching here.
	for _, sp := range [][2]string{{"user:alice", "other"}, {"user:alice", "*"}, {"user:*", "other/*"}, {"group:alice", "other/*"}} {
		if err := st.RevokeGrant(ctx, sp[0], sp[1]); !errors.Is(err, metadata.ErrNotFound) {
			t.Errorf("RevokeGrant(%s, %s): %v; want ErrNotFound", sp[0], sp[1], err)
		}
	}
	wantGrants(t, st, "user:alice other/* [pull push]")
	// A revoked grant can be granted again.
	addGrant(t, st, "user:bob", "team/*", "pull")
	wantGrants(t, st, "user:alice other/* [pull push]", "user:bob team/* [pull]")
}

func (s accountsSuite) refreshTokens(t *testing.T) {
	st := s.open(t)
	createAccount(t, st, &metadata.Account{Name: "alice", Kind: metadata.KindUser, Secret: "a"})
	wantRefreshToken(t, st, "unknown", "")
	createRefreshToken(t, st, "valid", "alice", time.Now().Add(time.Hour))
	createRefreshToken(t, st, "expired", "alice", time.Now().Add(-time.Second))
	createRefreshToken(t, st, "long-expired", "alice", time.Now().Add(-48*time.Hour))
	wantRefreshToken(t, st, "valid", "alice")
	wantRefreshToken(t, st, "expired", "")
	wantRefreshToken(t, st, "long-expired", "")
	// A new token after expired ones does not disturb the valid ones.
	createRefreshToken(t, st, "valid2", "alice", time.Now().Add(90*24*time.Hour))
	wantRefreshToken(t, st, "valid", "alice")
	wantRefreshToken(t, st, "valid2", "alice")
	wantRefreshToken(t, st, "VALID", "")
}

func (s accountsSuite) settings(t *testing.T) {
	st := s.open(t)
	wantSetting := func(key string, want []byte) {
		t.Helper()
		got, err := st.Setting(ctx, key)
		if want == nil {
			if !errors.Is(err, metadata.ErrNotFound) {
				t.Errorf("Setting(%s) = %q, %v; want ErrNotFound", key, got, err)
			}
			return
		}
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("Setting(%s) = %q, %v; want %q", key, got, err, want)
		}
	}
	wantSetting("keys", nil)
	binary := []byte{0, 1, 2, 0xff, 0, 'x'}
	if err := st.CreateSetting(ctx, "keys", binary); err != nil {
		t.Fatalf("CreateSetting: %v", err)
	}
	wantSetting("keys", binary)
	if err := st.CreateSetting(ctx, "keys", []byte("other")); !errors.Is(err, metadata.ErrExists) {
		t.Errorf("CreateSetting of an existing key: %v; want ErrExists", err)
	}
	wantSetting("keys", binary)
	if err := st.SetSetting(ctx, "keys", []byte("replaced")); err != nil {
		t.Fatalf("SetSetting: %v", err)
	}
	wantSetting("keys", []byte("replaced"))
	// SetSetting creates too.
	if err := st.SetSetting(ctx, "other", []byte("v")); err != nil {
		t.Fatalf("SetSetting(new): %v", err)
	}
	wantSetting("other", []byte("v"))
	wantSetting("keys", []byte("replaced"))
	wantSetting("Keys", nil)
	if err := st.CreateSetting(ctx, "other", []byte("w")); !errors.Is(err, metadata.ErrExists) {
		t.Errorf("CreateSetting after SetSetting: %v; want ErrExists", err)
	}
	// A large value.
	big := bytes.Repeat([]byte("0123456789abcdef"), 64<<10/16)
	if err := st.SetSetting(ctx, "big", big); err != nil {
		t.Fatalf("SetSetting(big): %v", err)
	}
	wantSetting("big", big)
	// By prefix, literally ('_' and '%' are no wildcards); deleted one by one.
	for _, k := range []string{"lifecycle/team/*", "lifecycle/a_b", "lifecycleX", "lifecycle%"} {
		if err := st.SetSetting(ctx, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := st.Settings(ctx, "lifecycle/")
	if err != nil || len(got) != 2 || string(got["lifecycle/team/*"]) != "lifecycle/team/*" || string(got["lifecycle/a_b"]) != "lifecycle/a_b" {
		t.Errorf("Settings(lifecycle/) = %q, %v; want the two under it", got, err)
	}
	if got, err := st.Settings(ctx, "lifecycle_"); err != nil || len(got) != 0 {
		t.Errorf("Settings(lifecycle_) = %q, %v; want none", got, err)
	}
	if err := st.DeleteSetting(ctx, "lifecycle/a_b"); err != nil {
		t.Fatal(err)
	}
	wantSetting("lifecycle/a_b", nil)
	if err := st.DeleteSetting(ctx, "lifecycle/a_b"); !errors.Is(err, metadata.ErrNotFound) {
		t.Errorf("DeleteSetting of a missing key: %v; want ErrNotFound", err)
	}
}

// warmAccounts is a read for together.
func warmAccounts(st metadata.Accounts) func() {
	return func() { st.CountAccounts(ctx) }
}

func (s accountsSuite) concurrentCreateSetting(t *testing.T) {
	st := s.open(t)
	const n = 16
	errs := together(n, warmAccounts(st), func(i int) error {
		return st.CreateSetting(ctx, "token_signing_keys", fmt.Appendf(nil, "value %d", i))
	})
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("CreateSetting %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, metadata.ErrExists):
			t.Errorf("CreateSetting %d: %v; want nil or ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no CreateSetting succeeded")
	}
	got, err := st.Setting(ctx, "token_signing_keys")
	if want := fmt.Sprintf("value %d", winner); err != nil || string(got) != want {
		t.Errorf("Setting = %q, %v; want the winner's %q", got, err, want)
	}
}

func (s accountsSuite) concurrentCreateAccount(t *testing.T) {
	st := s.open(t)
	const n = 16
	errs := together(n, warmAccounts(st), func(i int) error {
		return st.CreateAccount(ctx, &metadata.Account{Name: "admin", Kind: metadata.KindUser, Secret: fmt.Sprint(i)})
	})
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Errorf("CreateAccount %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, metadata.ErrExists):
			t.Errorf("CreateAccount %d: %v; want nil or ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no CreateAccount succeeded")
	}
	if got := getAccount(t, st, "admin"); got.Secret != fmt.Sprint(winner) {
		t.Errorf("admin's secret = %q, want the winner's %d", got.Secret, winner)
	}
	if n, err := st.CountAccounts(ctx); err != nil || n != 1 {
		t.Errorf("CountAccounts = %d, %v; want 1", n, err)
	}
}

// Grants of different actions to one subject on one pattern at once all count.
func (s accountsSuite) concurrentAddGrant(t *testing.T) {
	st := s.open(t)
	const n = 16
	var want []string
	for i := range n {
		want = append(want, fmt.Sprintf("action%02d", i))
	}
	errs := together(n, warmAccounts(st), func(i int) error {
		return st.AddGrant(ctx, metadata.Grant{Subject: "user:alice", Pattern: "team/*", Actions: []string{want[i], "pull"}})
	})
	for i, err := range errs {
		if err != nil {
			t.Errorf("AddGrant %d: %v", i, err)
		}
	}
	wantGrants(t, st, fmt.Sprintf("user:alice team/* %v", append(want, "pull")))
}

// authVersion: every change to accounts or grants moves the version; reads, settings and refresh
// tokens do not.
func (s accountsSuite) authVersion(t *testing.T) {
	st := s.open(t)
	version := func() int64 {
		t.Helper()
		v, err := st.AuthVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	last := version()
	step := func(what string, moves bool, change func() error) {
		t.Helper()
		if err := change(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		v := version()
		if moved := v != last; moved != moves {
			t.Errorf("%s: version %d -> %d; want moved=%v", what, last, v, moves)
		}
		last = v
	}
	a := &metadata.Account{Name: "ver", Kind: metadata.KindUser, Secret: "h1"}
	step("create account", true, func() error { return st.CreateAccount(ctx, a) })
	step("read accounts", false, func() error { _, err := st.ListAccounts(ctx, ""); return err })
	step("update account", true, func() error {
		b := *a
		b.Groups = []string{"dev"}
		return st.UpdateAccount(ctx, &b)
	})
	step("add grant", true, func() error {
		return st.AddGrant(ctx, metadata.Grant{Subject: "user:ver", Pattern: "team/*", Actions: []string{"pull", "push"}})
	})
	step("add to a grant", true, func() error {
		return st.AddGrant(ctx, metadata.Grant{Subject: "user:ver", Pattern: "team/*", Actions: []string{"delete"}})
	})
	step("revoke part of a grant", true, func() error { return st.RevokeGrant(ctx, "user:ver", "team/*", "push") })
	step("setting", false, func() error { return st.SetSetting(ctx, "k", []byte("v")) })
	step("refresh token", false, func() error {
		return st.CreateRefreshToken(ctx, "rt", "ver", time.Now().Add(time.Hour))
	})
	step("revoke the grant", true, func() error { return st.RevokeGrant(ctx, "user:ver", "team/*") })
	step("delete account", true, func() error { return st.DeleteAccount(ctx, "ver") })
}
