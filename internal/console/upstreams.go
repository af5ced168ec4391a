package console

import (
	"fmt"
	"html/template"
	"net/http"
	"strings"
	"time"

	"github.com/berth/berth/internal/proxy"
)

// ruleView is one pull-through rule on the upstreams page.
type ruleView struct {
	proxy.Status
	Chart template.HTML
	// Over the last 24 h (the samples this replica took).
	Gets, Heads, BlobGets, PullsSaved, BytesSaved, Stale, ClientGets int64
	Since                                                            time.Time
}

// upstreams shows, per pull-through rule the user administers, the upstream quota over the last
// 24 hours and what the cache saved.
func (c *Console) upstreams(q *request) error {
	visible := c.visibleRules(q)
	if len(visible) == 0 {
		return errNotFound
	}
	var views []ruleView
	for _, st := range c.opt.Cache.Status() {
		if !contains(visible, st.Prefix) {
			continue
		}
		hist := c.opt.Cache.History(st.Prefix)
		v := ruleView{Status: st, Chart: quotaChart(st.Prefix, hist, c.now())}
		for i, s := range hist {
			if i == 0 {
				v.Since = s.At
			}
			v.Gets += s.ManifestGets
			v.Heads += s.ManifestHeads
			v.BlobGets += s.BlobGets
			v.PullsSaved += s.PullsSaved
			v.BytesSaved += s.BytesSaved
			v.Stale += s.StaleServes
			v.ClientGets += s.ClientGets
		}
		views = append(views, v)
	}
	c.render(q.w, q, http.StatusOK, "upstreams", map[string]any{"Title": "Upstreams", "Rules": views})
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Chart geometry, in the SVG's own units (it scales to the page's width).
const (
	chartW, chartH         = 720, 220
	padL, padR, padT, padB = 52, 12, 12, 28
	plotW, plotH           = chartW - padL - padR, chartH - padT - padB
	chartSpan              = proxy.HistorySpan
	chartHourTicks         = 6 // a tick every 4 h
	pointRadius            = 2.5
)

// quotaChart draws the upstream quota remaining (a line with a point per sample) against the
// limit and the reserve (dashed), over the 24 hours that end now, as inline SVG: no script, and
// the same drawing with or without one. Samples whose quota was not known yet are left out.
func quotaChart(prefix string, samples []proxy.Sample, now time.Time) template.HTML {
	start := now.Add(-chartSpan)
	maxY := 1
	var known []proxy.Sample
	for _, s := range samples {
		if !s.QuotaKnown || s.At.Before(start) {
			continue
		}
		known = append(known, s)
		maxY = max(maxY, s.Limit, s.Remaining)
	}
	x := func(t time.Time) float64 {
		f := float64(t.Sub(start)) / float64(chartSpan)
		return padL + min(max(f, 0), 1)*plotW
	}
	y := func(v int) float64 { return padT + plotH - float64(v)/float64(maxY)*plotH }
	var b strings.Builder
	title := fmt.Sprintf("Upstream quota of %s over the last 24 hours", prefix)
	desc := "No quota reported by the upstream yet."
	if n := len(known); n > 0 {
		last := known[n-1]
		desc = fmt.Sprintf("%d samples; now %d of %d pulls remaining (reserve %d).", n, last.Remaining, last.Limit, last.Reserve)
	}
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %d %d" role="img" aria-labelledby="chart-%s-t chart-%s-d" data-points="%d">`,
		chartW, chartH, template.HTMLEscapeString(prefix), template.HTMLEscapeString(prefix), len(known))
	fmt.Fprintf(&b, `<title id="chart-%s-t">%s</title><desc id="chart-%s-d">%s</desc>`,
		template.HTMLEscapeString(prefix), template.HTMLEscapeString(title), template.HTMLEscapeString(prefix), template.HTMLEscapeString(desc))
	// Axes and grid: four horizontal lines, a tick every four hours.
	for i := 0; i <= 4; i++ {
		v := maxY * i / 4
		yy := y(v)
		fmt.Fprintf(&b, `<line class="grid" x1="%d" x2="%d" y1="%.1f" y2="%.1f"/>`, padL, padL+plotW, yy, yy)
		fmt.Fprintf(&b, `<text class="axis" x="%d" y="%.1f" text-anchor="end">%d</text>`, padL-6, yy+4, v)
	}
	for i := 0; i <= chartHourTicks; i++ {
		t := start.Add(chartSpan * time.Duration(i) / chartHourTicks)
		xx := x(t)
		label := fmt.Sprintf("-%dh", 24-24*i/chartHourTicks)
		if i == chartHourTicks {
			label = "now"
		}
		fmt.Fprintf(&b, `<text class="axis" x="%.1f" y="%d" text-anchor="middle">%s</text>`, xx, chartH-8, label)
	}
	if len(known) > 0 {
		last := known[len(known)-1]
		if last.Limit > 0 {
			fmt.Fprintf(&b, `<line class="limit" x1="%d" x2="%d" y1="%.1f" y2="%.1f"><title>limit %d</title></line>`, padL, padL+plotW, y(last.Limit), y(last.Limit), last.Limit)
		}
		if last.Reserve > 0 {
			fmt.Fprintf(&b, `<line class="reserve" x1="%d" x2="%d" y1="%.1f" y2="%.1f"><title>reserve %d</title></line>`, padL, padL+plotW, y(last.Reserve), y(last.Reserve), last.Reserve)
		}
		var pts []string
		for _, s := range known {
			pts = append(pts, fmt.Sprintf("%.1f,%.1f", x(s.At), y(s.Remaining)))
		}
		fmt.Fprintf(&b, `<polyline class="remaining" points="%s"/>`, strings.Join(pts, " "))
		for _, s := range known {
			fmt.Fprintf(&b, `<circle class="point" cx="%.1f" cy="%.1f" r="%.1f"><title>%s: %d of %d remaining</title></circle>`,
				x(s.At), y(s.Remaining), pointRadius, s.At.UTC().Format("15:04 UTC"), s.Remaining, s.Limit)
		}
	} else {
		fmt.Fprintf(&b, `<text class="axis" x="%d" y="%d" text-anchor="middle">no quota reported yet</text>`, padL+plotW/2, padT+plotH/2)
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String()) // every value in it is a number or escaped above
}
