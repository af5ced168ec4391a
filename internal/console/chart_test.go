package console

import (
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth/berth/internal/proxy"
)

// TestQuotaChart: one point per sample whose quota was known, within the last 24 hours, placed
// by time and remaining quota; the limit and reserve lines; text escaped.
func TestQuotaChart(t *testing.T) {
	now := time.Date(2026, 12, 4, 20, 0, 0, 0, time.UTC)
	var samples []proxy.Sample
	samples = append(samples, proxy.Sample{At: now.Add(-30 * time.Hour), QuotaKnown: true, Limit: 100, Remaining: 1}) // too old
	samples = append(samples, proxy.Sample{At: now.Add(-23 * time.Hour)})                                             // unknown
	for i := 0; i <= 12; i++ {
		samples = append(samples, proxy.Sample{At: now.Add(-time.Duration(12-i) * time.Hour), QuotaKnown: true, Limit: 100, Remaining: 100 - 5*i, Reserve: 20})
	}
	svg := string(quotaChart(`hub<"x">`, samples, now))
	if n := strings.Count(svg, `<circle class="point"`); n != 13 {
		t.Errorf("%d points, want 13", n)
	}
	if !strings.Contains(svg, `data-points="13"`) || !strings.Contains(svg, `class="limit"`) || !strings.Contains(svg, `class="reserve"`) {
		t.Errorf("chart lacks its count, limit or reserve:\n%s", svg)
	}
	if strings.Contains(svg, `hub<"x">`) || !strings.Contains(svg, "hub&lt;&#34;x&#34;&gt;") {
		t.Errorf("the prefix is not escaped:\n%s", svg)
	}
	// The last point is at the right edge (now) and at 40 of 100: 60 % down the plot.
	m := regexp.MustCompile(`class="remaining" points="([^"]*)"`).FindStringSubmatch(svg)
	pts := strings.Fields(m[1])
	if last := pts[len(pts)-1]; last != "708.0,120.0" {
		t.Errorf("the last point is at %s, want 708.0,120.0 (x: 52+656, y: 12+180*0.6)", last)
	}
	if first := pts[0]; !strings.HasPrefix(first, "380.0,") {
		t.Errorf("the point of 12 h ago is at %s, want x 380.0 (the middle)", first)
	}
	if empty := string(quotaChart("hub", nil, now)); !strings.Contains(empty, "no quota reported yet") || strings.Contains(empty, "<circle") {
		t.Errorf("a chart without samples:\n%s", empty)
	}
}
