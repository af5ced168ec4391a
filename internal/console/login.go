package console

import (
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/berth/berth/internal/auth"
)

func equal(a, b string) bool { return subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1 }

// safeNext is where a login goes on to: a console path (never another site, "//host" or a
// backslash trick), else the repositories.
func safeNext(next string) string {
	if !strings.HasPrefix(next, Prefix) || strings.HasPrefix(next, "//") || strings.ContainsAny(next, "\\\r\n") {
		return Prefix
	}
	return next
}

// loginForm shows the login form. Its CSRF token is bound to a random cookie (login CSRF: a page
// elsewhere must not log a visitor in to an account of its choosing).
func (c *Console) loginForm(w http.ResponseWriter, r *http.Request) error {
	key, err := c.key(r.Context())
	if err != nil {
		return err
	}
	next := safeNext(r.URL.Query().Get("next"))
	if s, ok := c.readSession(r, key); ok {
		if p, err := c.opt.Auth.SessionPrincipal(r.Context(), s.User, s.FP); err == nil && p != nil {
			http.Redirect(w, r, next, http.StatusSeeOther)
			return nil
		}
	}
	c.showLogin(w, r, key, http.StatusOK, "", "", next)
	return nil
}

func (c *Console) showLogin(w http.ResponseWriter, r *http.Request, key []byte, status int, user, msg, next string) {
	n := nonce()
	http.SetCookie(w, c.cookie(r, loginCookie, n, 3600))
	c.render(w, nil, status, "login", map[string]any{
		"Title": "Log in", "LoginCSRF": token(key, "login", n), "Username": user, "Error": msg, "Next": next,
	})
}

// login checks the form and starts a session.
func (c *Console) login(w http.ResponseWriter, r *http.Request) error {
	key, err := c.key(r.Context())
	if err != nil {
		return err
	}
	ck, err := r.Cookie(loginCookie)
	if err != nil {
		// No cookie: cookies are off, or the form is older than an hour.
		return &pageError{http.StatusForbidden, "Form expired", "The login form expired or cookies are turned off: reload the login page and try again (the console needs cookies)."}
	}
	if err := c.checkForm(r, token(key, "login", ck.Value)); err != nil {
		return err
	}
	user := strings.TrimSpace(r.PostForm.Get("username"))
	password := r.PostForm.Get("password")
	next := safeNext(r.PostForm.Get("next"))
	switch {
	case user == "" && password == "":
		c.showLogin(w, r, key, http.StatusBadRequest, user, "Enter your user name and password.", next)
		return nil
	case user == "":
		c.showLogin(w, r, key, http.StatusBadRequest, user, "Enter your user name.", next)
		return nil
	case password == "":
		c.showLogin(w, r, key, http.StatusBadRequest, user, "Enter your password.", next)
		return nil
	case len(user) > 256 || len(password) > 1024:
		c.showLogin(w, r, key, http.StatusBadRequest, "", "That user name or password is too long.", next)
		return nil
	}
	p, err := c.opt.Auth.Login(r, user, password)
	var te *auth.ThrottledError
	switch {
	case errors.As(err, &te):
		w.Header().Set("Retry-After", fmt.Sprint(int(te.RetryAfter/time.Second)+1))
		c.showLogin(w, r, key, http.StatusTooManyRequests, user,
			fmt.Sprintf("Too many failed logins: try again in %s.", te.RetryAfter.Round(time.Second)), next)
		return nil
	case errors.Is(err, auth.ErrBadCredentials):
		msg := "Wrong user name or password."
		if strings.Contains(err.Error(), "only users") {
			msg = "Only users log in to the console; robot accounts use the registry API."
		}
		c.showLogin(w, r, key, http.StatusUnauthorized, user, msg, next)
		return nil
	case err != nil:
		return err
	}
	name := strings.TrimPrefix(p.Subject, "user:")
	fp, err := c.opt.Auth.Fingerprint(r.Context(), name)
	if err != nil {
		return err
	}
	now := c.now().Unix()
	c.writeSession(w, r, key, &session{User: name, FP: fp, Issued: now, Seen: now, Nonce: nonce()})
	http.SetCookie(w, c.cookie(r, loginCookie, "", -1))
	http.Redirect(w, r, next, http.StatusSeeOther)
	return nil
}

func (c *Console) logout(q *request) error {
	http.SetCookie(q.w, c.cookie(q.r, sessionCookie, "", -1))
	http.Redirect(q.w, q.r, Prefix+"login", http.StatusSeeOther)
	return nil
}
