package server

import (
	"context"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/berth/berth/internal/metadata"
)

// follower is what this process does with the messages of one channel of the store's
// notifications.
type follower struct {
	ready func()               // listening started: catch up on what may have been missed
	got   func(payload string) // one message
	down  func()               // listening stopped; nil: nothing to do
}

// listen follows channels until ctx ends, on one connection for all of them, and listens again
// a second after it stops (the database restarting). Each follower has its own way of doing
// without meanwhile: account changes are polled for, manifests are read from the store.
func listen(ctx context.Context, n metadata.Notifier, follow map[string]follower, log *slog.Logger) {
	if len(follow) == 0 {
		return
	}
	channels := slices.Sorted(maps.Keys(follow))
	for {
		err := n.Listen(ctx, channels,
			func() {
				for _, f := range follow {
					f.ready()
				}
			},
			func(channel, payload string) {
				if f, ok := follow[channel]; ok {
					f.got(payload)
				}
			})
		for _, f := range follow {
			if f.down != nil {
				f.down()
			}
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("listening to other replicas' changes stopped; listening again in a second", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
	}
}
