package console

import (
	"net/http"

	"github.com/berth/berth/internal/events"
)

// Webhooks is what the console shows of the event webhooks (*events.Dispatcher).
type Webhooks interface {
	Stats() []events.Stats
	Deliveries(name string) []events.Delivery
}

// webhookView is one webhook's counters and its last delivery attempts, newest first.
type webhookView struct {
	events.Stats
	Deliveries []events.Delivery
}

// adminWebhooks shows each webhook's deliveries: what its receiver accepted, the attempts that
// failed and why, what was given up or dropped, and what waits. They are this replica's: each
// replica delivers the events of the requests it served.
func (c *Console) adminWebhooks(q *request) error {
	var views []webhookView
	if c.opt.Webhooks != nil {
		for _, s := range c.opt.Webhooks.Stats() {
			views = append(views, webhookView{Stats: s, Deliveries: c.opt.Webhooks.Deliveries(s.Name)})
		}
	}
	c.render(q.w, q, http.StatusOK, "webhooks", map[string]any{"Title": "Webhooks", "Webhooks": views})
	return nil
}
