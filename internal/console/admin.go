package console

import (
	"net/http"
	"time"
)

// The admin pages. Who may see them is decided twice: the console shows them to administrators
// of every repository (admin on *), and each operation is authorized again by the admin service
// (internal/admin) it calls, which has the same rules as the admin API.

// routeAdmin registers the admin pages.
func (c *Console) routeAdmin() {
	c.mux.Handle("GET "+Prefix+"admin/{$}", c.admin(c.adminHome))
	c.mux.Handle("GET "+Prefix+"admin/cache", c.admin(c.adminCache))
	c.mux.Handle("GET "+Prefix+"admin/webhooks", c.admin(c.adminWebhooks))
	c.routeAdminForms()
}

// admin adapts a handler of an admin page: a user who is not an administrator gets 404, as for
// a repository they may not see.
func (c *Console) admin(h userFunc) http.Handler {
	return c.user(func(q *request) error {
		if !q.isAdmin {
			return errNotFound
		}
		return h(q)
	})
}

func (c *Console) adminHome(q *request) error {
	c.render(q.w, q, http.StatusOK, "admin", map[string]any{"Title": "Admin", "Forms": c.formsReady()})
	return nil
}

// boundView is one pull-through rule's bounds beside what its repositories hold.
type boundView struct {
	Prefix    string
	MaxBytes  int64
	Used      int64
	Percent   int
	UnusedFor time.Duration
	Pin, Warm []string
}

func (c *Console) adminCache(q *request) error { return c.showCache(q, nil) }

// showCache shows each pull-through rule's bounds and what its repositories hold now, and the
// forms that revalidate a cached tag and evict a cached image (with the admin service).
func (c *Console) showCache(q *request, ferr error) error {
	var views []boundView
	if c.opt.Cache != nil {
		for _, b := range c.opt.Cache.Bounds() {
			used, _, err := c.opt.Store.Usage(q.r.Context(), b.Prefix+"/*", "")
			if err != nil {
				return err
			}
			v := boundView{Prefix: b.Prefix, MaxBytes: b.MaxBytes, Used: used, UnusedFor: b.UnusedFor, Pin: b.Pin, Warm: b.Warm}
			if b.MaxBytes > 0 {
				v.Percent = int(min(100, used*100/b.MaxBytes))
			}
			views = append(views, v)
		}
	}
	return c.formPage(q, "cache", map[string]any{"Title": "Cache bounds", "Bounds": views, "Forms": c.formsReady(), "Done": q.notice}, ferr)
}
