package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth/berth/internal/admin"
	"github.com/berth/berth/internal/auth"
	"github.com/berth/berth/internal/metadata"
	"github.com/berth/berth/internal/oci"
)

// routeAdminForms registers the admin forms, when there is an admin service.
func (c *Console) routeAdminForms() {
	if c.opt.Admin == nil {
		return
	}
	c.mux.Handle("GET "+Prefix+"admin/accounts", c.admin(c.accountsPage))
	c.mux.Handle("POST "+Prefix+"admin/accounts", c.admin(c.accountsPost))
	c.mux.Handle("GET "+Prefix+"admin/robots", c.admin(c.robotsPage))
	c.mux.Handle("POST "+Prefix+"admin/robots", c.admin(c.robotsPost))
	c.mux.Handle("GET "+Prefix+"admin/grants", c.admin(c.grantsPage))
	c.mux.Handle("POST "+Prefix+"admin/grants", c.admin(c.grantsPost))
	c.mux.Handle("GET "+Prefix+"admin/lifecycle", c.admin(c.lifecyclePage))
	c.mux.Handle("POST "+Prefix+"admin/cache", c.admin(c.cachePost))
}

// formsReady reports whether the admin forms are served.
func (c *Console) formsReady() bool { return c.opt.Admin != nil }

// formError is bad input in a form: the form is shown again with the message (400).
type formError struct{ msg string }

func (e *formError) Error() string { return e.msg }

func invalid(format string, args ...any) error { return &formError{fmt.Sprintf(format, args...)} }

// userMessage turns an admin operation's error into the form's message, or returns it when it is
// not the caller's to fix.
func userMessage(err error) (string, bool) {
	var fe *formError
	switch {
	case errors.As(err, &fe):
		return fe.msg, true
	case errors.Is(err, admin.ErrInvalid), errors.Is(err, admin.ErrDenied), errors.Is(err, admin.ErrUnavailable),
		errors.Is(err, metadata.ErrExists), errors.Is(err, metadata.ErrNotFound):
		return err.Error(), true
	}
	return "", false
}

// formPage renders an admin page: status 200, or 400 with a message after bad input; notice says
// what a successful post did.
func (c *Console) formPage(q *request, page string, data map[string]any, err error) error {
	status := http.StatusOK
	if err != nil {
		msg, ok := userMessage(err)
		if !ok {
			return err
		}
		status = http.StatusBadRequest
		data["Error"] = msg
		data["Form"] = q.r.PostForm
	}
	c.render(q.w, q, status, page, data)
	return nil
}

// withNotice says, on the page a post answers with, what it did (on that page itself, not after a
// redirect whose URL anyone could write a message into).
func withNotice(q *request, notice string) *request {
	q.notice = notice
	return q
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		if f != "" {
			out = append(out, f)
		}
	}
	return out
}

// --- accounts ---

func (c *Console) accountsPage(q *request) error { return c.showAccounts(q, nil) }

// actx is the context of an admin operation: the admin service authorizes the principal in it.
func actx(q *request) context.Context { return auth.WithPrincipal(q.r.Context(), q.p) }

func (c *Console) showAccounts(q *request, err error) error {
	users, lerr := c.opt.Admin.ListAccounts(actx(q), metadata.KindUser)
	if lerr != nil {
		return lerr
	}
	return c.formPage(q, "accounts", map[string]any{"Title": "Accounts", "Users": users, "Done": q.notice}, err)
}

func (c *Console) accountsPost(q *request) error {
	ctx, f := actx(q), q.r.PostForm
	name := strings.TrimSpace(f.Get("name"))
	switch f.Get("op") {
	case "create":
		password := f.Get("password")
		var err error
		switch {
		case auth.ValidAccountName(name) != nil:
			err = invalid("User name: %v.", auth.ValidAccountName(name))
		case len(password) < 12:
			err = invalid("Password: at least 12 characters.")
		case password != f.Get("password2"):
			err = invalid("The two passwords differ.")
		}
		groups := splitList(f.Get("groups"))
		for _, g := range groups {
			if gerr := auth.ValidAccountName(g); err == nil && gerr != nil {
				err = invalid("Groups: %v.", gerr)
			}
		}
		if err == nil {
			_, _, err = c.opt.Admin.CreateUser(ctx, admin.NewUser{Name: name, Password: password, Groups: groups})
		}
		if err != nil {
			return c.showAccounts(q, err)
		}
		return c.showAccounts(withNotice(q, "Created user "+name+"."), nil)
	case "delete":
		if name == strings.TrimPrefix(q.p.Subject, "user:") {
			return c.showAccounts(q, invalid("You cannot delete your own account here."))
		}
		if err := c.opt.Admin.DeleteAccount(ctx, name, metadata.KindUser); err != nil {
			return c.showAccounts(q, err)
		}
		return c.showAccounts(withNotice(q, "Deleted user "+name+"."), nil)
	}
	return c.showAccounts(q, invalid("Unknown operation."))
}

// --- robots ---

func (c *Console) robotsPage(q *request) error { return c.showRobots(q, "", "", nil) }

// showRobots renders the robots page; secret is a new robot's, shown on this response only
// (never stored, and the page is not cached).
func (c *Console) showRobots(q *request, robot, secret string, err error) error {
	robots, lerr := c.opt.Admin.ListAccounts(actx(q), metadata.KindRobot)
	if lerr != nil {
		return lerr
	}
	return c.formPage(q, "robots", map[string]any{"Title": "Robots", "Robots": robots, "NewRobot": robot, "Secret": secret,
		"Done": q.notice}, err)
}

func (c *Console) robotsPost(q *request) error {
	ctx, f := actx(q), q.r.PostForm
	name := strings.TrimSpace(f.Get("name"))
	switch f.Get("op") {
	case "create":
		var err error
		var expires time.Time
		if d := strings.TrimSpace(f.Get("days")); d != "" {
			n, perr := strconv.Atoi(d)
			if perr != nil || n < 1 || n > 3650 {
				err = invalid("Expires after: a whole number of days from 1 to 3650, or empty for never.")
			} else {
				expires = c.now().Add(time.Duration(n) * 24 * time.Hour)
			}
		}
		if verr := auth.ValidAccountName(name); err == nil && verr != nil {
			err = invalid("Robot name: %v.", verr)
		}
		description := strings.TrimSpace(f.Get("description"))
		if err == nil && len(description) > 256 {
			err = invalid("Description: at most 256 characters.")
		}
		var secret string
		if err == nil {
			_, secret, err = c.opt.Admin.CreateRobot(ctx, admin.NewRobot{Name: name, Description: description, Expires: expires})
		}
		if err != nil {
			return c.showRobots(q, "", "", err)
		}
		return c.showRobots(q, name, secret, nil)
	case "delete":
		if err := c.opt.Admin.DeleteAccount(ctx, name, metadata.KindRobot); err != nil {
			return c.showRobots(q, "", "", err)
		}
		return c.showRobots(withNotice(q, "Deleted robot "+name+"."), "", "", nil)
	}
	return c.showRobots(q, "", "", invalid("Unknown operation."))
}

// --- grants ---

var actionChoices = []string{"pull", "push", "delete", "fetch", "admin"}

func (c *Console) grantsPage(q *request) error { return c.showGrants(q, nil) }

func (c *Console) showGrants(q *request, err error) error {
	grants, lerr := c.opt.Admin.ListGrants(actx(q))
	if lerr != nil {
		return lerr
	}
	return c.formPage(q, "grants", map[string]any{"Title": "Grants", "Grants": grants, "Actions": actionChoices,
		"Done": q.notice}, err)
}

func (c *Console) grantsPost(q *request) error {
	ctx, f := actx(q), q.r.PostForm
	subject, pattern := strings.TrimSpace(f.Get("subject")), strings.TrimSpace(f.Get("pattern"))
	switch f.Get("op") {
	case "add":
		actions := f["actions"]
		var err error
		switch {
		case auth.ValidSubject(subject) != nil:
			err = invalid("Subject: %v.", auth.ValidSubject(subject))
		case auth.ValidPattern(pattern) != nil:
			err = invalid("Repositories: %v.", auth.ValidPattern(pattern))
		case len(actions) == 0:
			err = invalid("Actions: choose at least one.")
		}
		for _, a := range actions {
			if err == nil && !slices.Contains(actionChoices, a) {
				err = invalid("Actions: unknown action %q.", a)
			}
		}
		if err == nil {
			_, err = c.opt.Admin.Grant(ctx, subject, pattern, actions)
		}
		if err != nil {
			return c.showGrants(q, err)
		}
		return c.showGrants(withNotice(q, fmt.Sprintf("Granted %s on %s to %s.", strings.Join(actions, ", "), pattern, subject)), nil)
	case "revoke":
		if err := c.opt.Admin.Revoke(ctx, subject, pattern, nil); err != nil {
			return c.showGrants(q, err)
		}
		return c.showGrants(withNotice(q, fmt.Sprintf("Revoked the grant of %s on %s.", subject, pattern)), nil)
	}
	return c.showGrants(q, invalid("Unknown operation."))
}

// --- lifecycle preview ---

// lifecyclePage shows what the lifecycle policies would expire now, in one repository or all.
// It changes nothing, so its form is a GET.
func (c *Console) lifecyclePage(q *request) error {
	repo := strings.TrimSpace(q.r.URL.Query().Get("repository"))
	data := map[string]any{"Title": "Lifecycle preview", "Repository": repo}
	if repo != "" && !oci.ValidName(repo) {
		data["Error"] = fmt.Sprintf("Repository: %q is not a repository name (lowercase letters, digits, separators . _ - /).", repo)
		c.render(q.w, q, http.StatusBadRequest, "lifecycle", data)
		return nil
	}
	expired, err := c.opt.Admin.LifecyclePreview(actx(q), repo)
	if msg, ok := userMessage(err); err != nil && ok {
		data["Error"] = msg
		c.render(q.w, q, http.StatusBadRequest, "lifecycle", data)
		return nil
	} else if err != nil {
		return err
	}
	data["Expired"] = expired
	data["Ran"] = true
	c.render(q.w, q, http.StatusOK, "lifecycle", data)
	return nil
}

// --- cached images: revalidate, evict ---

func (c *Console) cachePost(q *request) error {
	ctx, f := actx(q), q.r.PostForm
	repo, ref := strings.TrimSpace(f.Get("repository")), strings.TrimSpace(f.Get("reference"))
	var err error
	switch {
	case !oci.ValidName(repo):
		err = invalid("Repository: %q is not a repository name.", repo)
	case ref == "":
		err = invalid("Tag or digest: required.")
	}
	if err != nil {
		return c.showCache(q, err)
	}
	switch f.Get("op") {
	case "revalidate":
		if !oci.ValidTag(ref) {
			return c.showCache(q, invalid("Tag: %q is not a tag.", ref))
		}
		rv, err := c.opt.Admin.Revalidate(ctx, repo, ref)
		if err != nil {
			return c.showCache(q, err)
		}
		msg := fmt.Sprintf("%s:%s is unchanged upstream (%s).", repo, ref, shortDigest(rv.Digest))
		if rv.Changed {
			msg = fmt.Sprintf("%s:%s moved upstream from %s to %s; the next pull serves the new one.", repo, ref, shortDigest(rv.Previous), shortDigest(rv.Digest))
		}
		return c.showCache(withNotice(q, msg), nil)
	case "evict":
		ev, err := c.opt.Admin.Evict(ctx, repo, ref)
		if err != nil {
			return c.showCache(q, err)
		}
		return c.showCache(withNotice(q, fmt.Sprintf("Evicted %s@%s: %d manifest(s), %d blob(s), %s freed.", repo, shortDigest(ev.Digest),
			len(ev.Manifests), ev.BlobsDeleted, humanBytes(ev.BytesFreed))), nil)
	}
	return c.showCache(q, invalid("Unknown operation."))
}
