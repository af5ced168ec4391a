package auth

import (
	"encoding/json"
	"net/url"
	"strings"
	"testing"
	"time"
)

// wantAuditLine checks that exactly one line was logged since the last reset, with msg and the
// fields, and that the log holds none of the secrets.
func wantAuditLine(t *testing.T, e *env, what, msg string, fields map[string]string, secrets ...string) {
	t.Helper()
	lines := e.audit.lines(t)
	if len(lines) != 1 {
		t.Errorf("%s: %d audit lines, want 1: %s", what, len(lines), e.audit.String())
	} else {
		l := lines[0]
		if l["msg"] != msg {
			t.Errorf("%s: msg %v, want %q", what, l["msg"], msg)
		}
		for k, v := range fields {
			if l[k] != v {
				t.Errorf("%s: %s = %v, want %q (line %v)", what, k, l[k], v, l)
			}
		}
	}
	log := e.audit.String()
	for _, s := range secrets {
		if s != "" && strings.Contains(log, s) {
			t.Errorf("%s: the audit log contains the secret %q: %s", what, s, log)
		}
	}
	e.audit.Reset()
}

func TestAudit(t *testing.T) {
	e := newEnv(t, Options{})
	pw := e.user(t, "alice")
	robot := e.robot(t, "ci", time.Time{})
	e.grant(t, "user:alice", "team/*", "pull")
	const wrong = "Wr0ng-Passw0rd-Guess"

	wantTokenError(t, "wrong password", e.getToken(t, basic("alice", wrong), "repository:team/a:pull"), 401, "UNAUTHORIZED")
	wantAuditLine(t, e, "failed login", "login failed", map[string]string{"user": "alice", "addr": "127.0.0.1"}, wrong, pw)

	wantTokenError(t, "unknown user", e.getToken(t, basic("nobody", wrong)), 401, "UNAUTHORIZED")
	wantAuditLine(t, e, "failed login of an unknown user", "login failed", map[string]string{"user": "nobody", "addr": "127.0.0.1"}, wrong)

	wantTokenError(t, "wrong robot secret", e.getToken(t, basic("ci", robot+"x")), 401, "UNAUTHORIZED")
	wantAuditLine(t, e, "failed robot login", "login failed", map[string]string{"user": "ci", "addr": "127.0.0.1"}, robot)

	r := e.getToken(t, basic("alice", pw), "repository:team/a:pull")
	var body tokenResponse
	json.Unmarshal(r.body, &body)
	wantAuditLine(t, e, "token issued", "token issued",
		map[string]string{"subject": "user:alice", "account": "alice", "addr": "127.0.0.1", "scope": "repository:team/a:pull"},
		pw, body.Token, strings.Split(body.Token, ".")[2])

	r = e.postToken(t, url.Values{"grant_type": {"password"}, "username": {"ci"}, "password": {robot}, "access_type": {"offline"}})
	body = tokenResponse{}
	json.Unmarshal(r.body, &body)
	if body.RefreshToken == "" {
		t.Fatalf("no refresh token: %s", short(r.body))
	}
	wantAuditLine(t, e, "token issued with a refresh token", "token issued",
		map[string]string{"subject": "robot:ci", "addr": "127.0.0.1"},
		robot, body.AccessToken, body.RefreshToken, strings.TrimPrefix(body.RefreshToken, refreshPrefix), hashToken(body.RefreshToken))
	if l := e.audit.String(); l != "" {
		t.Errorf("left over: %s", l)
	}

	wantTokenError(t, "unknown refresh token", e.postToken(t, url.Values{"grant_type": {"refresh_token"}, "refresh_token": {"berth_rft_guessed"}}), 401, "UNAUTHORIZED")
	wantAuditLine(t, e, "unknown refresh token", "login failed", map[string]string{"addr": "127.0.0.1"}, "berth_rft_guessed")

	wantStatus(t, "anonymous token", e.getToken(t, ""), 200, "")
	wantAuditLine(t, e, "anonymous token", "token issued", map[string]string{"subject": "anonymous", "addr": "127.0.0.1"})

	// Basic on registry requests: failures are logged like the token endpoint's.
	wantStatus(t, "wrong password on a request", e.check(t, basic("alice", wrong), "team/a", "", "pull"), 401, "UNAUTHORIZED")
	wantAuditLine(t, e, "failed Basic login on a request", "login failed", map[string]string{"user": "alice"}, wrong)
}
