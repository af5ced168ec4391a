package proxy

import (
	"slices"
	"strings"
	"time"
)

// Bound is what bounds one rule's cached repositories (evict.go), as configured.
type Bound struct {
	Prefix    string
	MaxBytes  int64         // 0: no bound on bytes
	UnusedFor time.Duration // 0: images are never evicted for not being pulled
	Pin       []string      // NAME:TAG never evicted
	Warm      []string      // NAME:TAG kept cached
}

// Bounds lists every rule's bounds, by prefix (the console's admin page shows them beside what
// the rule's repositories hold).
func (c *Cache) Bounds() []Bound {
	out := make([]Bound, 0, len(c.rules))
	for _, r := range c.rules {
		out = append(out, Bound{Prefix: r.Prefix, MaxBytes: r.MaxBytes, UnusedFor: r.UnusedFor,
			Pin: slices.Clone(r.Pin), Warm: slices.Clone(r.Warm)})
	}
	slices.SortFunc(out, func(a, b Bound) int { return strings.Compare(a.Prefix, b.Prefix) })
	return out
}
