package e2e

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// revokeWithin is the README's promise: a revoked grant or a removed account stops the tokens
// already handed out within a second of the command.
const revokeWithin = time.Second

// revokeSlack is added to revokeWithin for what lies between the command's commit and its exit,
// and between a snapshot's load and its timestamp. Requests are timed by when they were sent, so
// a slow answer on a loaded machine cannot make the test fail; a revocation that is not enforced
// (tokens live 5 minutes) or that lags by seconds still does.
const revokeSlack = 500 * time.Millisecond

// TestRevocationRealClock: a token issued before `berth revoke` (of a robot's grant, of a group's
// grant) or `berth robot rm` works right before the command and is refused, with the refusal
// README's rule gives a caller with credentials (404 NAME_UNKNOWN), by every request sent more than
// 2 s (+ slack) after the command returned; from the first refusal on, it stays refused.
func TestRevocationRealClock(t *testing.T) {
	t.Parallel()
	b := startSecureBerth(t)
	admin := basicAuth("admin", b.AdminPassword())
	img := authPushImage(t, b, admin, "team/app", "v1", "revocation on a real clock\n")
	scope := "repository:team/app:pull"

	cases := []struct {
		name  string
		login func(t *testing.T) (user, secret string)
		cmd   []string
	}{
		{"revoke-robot-grant", func(t *testing.T) (string, string) {
			return "rev", authRobot(b, "rev", "team/*", "pull")
		}, []string{"revoke", "robot:rev", "team/*"}},
		{"revoke-group-grant", func(t *testing.T) (string, string) {
			pass := strings.TrimSpace(b.Admin("user", "add", "gina", "--groups", "readers"))
			b.Admin("grant", "group:readers", "team/*", "pull")
			return "gina", pass
		}, []string{"revoke", "group:readers", "team/*"}},
		{"robot-rm", func(t *testing.T) (string, string) {
			return "gone", authRobot(b, "gone", "team/*", "pull")
		}, []string{"robot", "rm", "gone"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			user, secret := c.login(t)
			// The grant may take up to the reload interval to reach the server: wait until a
			// token carries it.
			var tok string
			authEventually(t, 10*time.Second, "a token with the grant", func() bool {
				tok = authToken(t, b, user, secret, scope)
				access, _, _ := jwtAccess(t, tok)
				return len(access["repository:team/app"]) > 0
			})
			bearer := bearerAuth(tok)
			// It works right before the command.
			authWantManifest(t, b, bearer, "team/app", "v1", img.Manifest)
			b.Admin(c.cmd...)
			done := time.Now()
			delay := revokePoll(t, b, bearer, done)
			t.Logf("berth %s: the token issued before it was refused %v after the command returned (promise: %v)",
				strings.Join(c.cmd, " "), delay.Round(time.Millisecond), revokeWithin)
		})
	}
}

// revokePoll sends GET team/app:v1 with authz every 50 ms from done on, and returns how long after
// done the first refused request was sent. Every request sent after done+revokeWithin+revokeSlack
// must be refused, and none after the first refusal may succeed; polling goes on for a second past
// that bound so that a refusal that does not stick is seen.
func revokePoll(t *testing.T, b *berth, authz string, done time.Time) time.Duration {
	t.Helper()
	bound := revokeWithin + revokeSlack
	first := time.Duration(-1)
	for {
		sent := time.Now()
		since := sent.Sub(done)
		if since > bound+time.Second {
			break
		}
		r := authGetManifest(t, b, authz, "team/app", "v1")
		switch {
		case r.Status == http.StatusNotFound && r.errorCode() == "NAME_UNKNOWN":
			if first < 0 {
				first = since
			}
		case r.Status == http.StatusOK:
			if first >= 0 {
				t.Fatalf("the token was refused %v after the command, then worked again %v after it", first, since)
			}
			if since > bound {
				t.Fatalf("the token still works %v after the command (promise: %v)", since.Round(time.Millisecond), revokeWithin)
			}
		default:
			t.Fatalf("GET with the token %v after the command: %s, want 200 (before) or 404 NAME_UNKNOWN (after)", since, r)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if first < 0 {
		t.Fatalf("the token was never refused")
	}
	return first
}
