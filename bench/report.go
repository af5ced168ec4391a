package main

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// cell is one server's number at one point (the median of its samples, one per round), or why
// there is none.
type cell struct {
	v       float64
	ok      bool
	err     string // the point failed in some round: no number
	samples []float64
	noise   float64 // the most CPU cores other processes used while a sample was measured
	meter   bool    // noise was measured
}

func value(v float64) cell             { return cell{v: v, ok: true, samples: []float64{v}} }
func measuredBy(v, noise float64) cell { c := value(v); c.noise, c.meter = noise, true; return c }
func failure(msg string) cell          { return cell{err: msg} }
func failed(err error) cell            { return cell{err: err.Error()} }

// merge adds the samples of another round.
func (c cell) merge(n cell) cell {
	c.samples = append(slices.Clone(c.samples), n.samples...)
	c.noise, c.meter = max(c.noise, n.noise), c.meter || n.meter
	if c.err == "" {
		c.err = n.err
	}
	c.ok = c.err == "" && len(c.samples) > 0
	if c.ok {
		sorted := slices.Sorted(slices.Values(c.samples))
		c.v = sorted[len(sorted)/2]
		if len(sorted)%2 == 0 {
			c.v = (sorted[len(sorted)/2-1] + c.v) / 2
		}
	}
	return c
}

// spread is max/min of the samples.
func (c cell) spread() float64 {
	lo, hi := slices.Min(c.samples), slices.Max(c.samples)
	if lo <= 0 {
		return 1
	}
	return hi / lo
}

// target is a goal for berth: a bound on a ratio berth/ref, or on berth's own value (ref "").
type target struct {
	ref     string
	atLeast bool // the number must be >= bound; otherwise <= (or < for absolute bounds)
	bound   float64
	unit    string // of an absolute bound
}

func (t target) String() string {
	op := "<="
	if t.atLeast {
		op = ">="
	}
	if t.ref == "" {
		return fmt.Sprintf("berth < %g %s", t.bound, t.unit)
	}
	return fmt.Sprintf("berth/%s %s %.2fx", t.ref, op, t.bound)
}

// check says whether berth meets the target, given the row's cells.
func (t target) check(vals map[string]cell) (string, float64, bool) {
	b := vals["berth"]
	if !b.ok {
		return "n/a", 0, false
	}
	x := b.v
	if t.ref != "" {
		r := vals[t.ref]
		if !r.ok || r.v == 0 {
			return "n/a", 0, false
		}
		x = b.v / r.v
	}
	met := x <= t.bound
	switch {
	case t.ref == "" && !t.atLeast:
		met = x < t.bound
	case t.atLeast:
		met = x >= t.bound
	}
	if met {
		return "met", x, true
	}
	return "MISSED", x, true
}

// row is one point of a measurement: a concurrency and a metric (or a method), every server's cell.
type row struct {
	labels []string
	format string // of the values
	vals   map[string]cell
	target *target
}

// series is one measurement's rows, in a fixed order.
type series struct {
	name    string // as in -only, or "rss"
	title   string
	heads   []string // of the label columns
	servers []string
	rows    []*row
	key     func(conc int, metric string) []string
	notes   []string
}

func (s *series) set(conc int, metric, server string, c cell) {
	labels := s.key(conc, metric)
	for _, r := range s.rows {
		if slices.Equal(r.labels, labels) {
			r.vals[server] = r.vals[server].merge(c)
			return
		}
	}
	s.rows = append(s.rows, &row{labels: labels, format: "%.0f", vals: map[string]cell{server: cell{}.merge(c)}})
}

func (s *series) addRow(labels []string, format string, t *target) {
	s.rows = append(s.rows, &row{labels: labels, format: format, vals: map[string]cell{}, target: t})
}

// results holds every number of the run.
type results struct {
	manifest, manifestCPU *series
	download, push        *series
	rss                   map[string]float64 // the highest of the rounds
	pushPhases            map[int]map[string]*phaseSum
	servers               []string
	only                  []string
	errors                []string // of servers that could not be measured in full
}

// phaseSum adds up the time each request of a push took, to report the mean per blob.
type phaseSum struct {
	total phases
	blobs int
}

func newResults(o options, p plan) *results {
	registries := slices.DeleteFunc(slices.Clone(o.servers), func(s string) bool { return s == "fileserver" })
	byConcMetric := func(conc int, metric string) []string { return []string{strconv.Itoa(conc), metric} }
	res := &results{
		manifest: &series{
			name:    "manifest",
			title:   fmt.Sprintf("Manifest by tag, requests/s (GET: wrk, HEAD: headload; %ds per point after %ds warm-up; any error response fails the point)", p.manDur, p.manWarm),
			heads:   []string{"method", "conc"},
			servers: registries,
			key:     func(conc int, method string) []string { return []string{method, strconv.Itoa(conc)} },
		},
		manifestCPU: &series{
			name:    "manifest",
			title:   "Manifest by tag, server CPU microseconds per request (same runs; lower is better)",
			heads:   []string{"method", "conc"},
			servers: registries,
			key:     func(conc int, method string) []string { return []string{method, strconv.Itoa(conc)} },
		},
		download: &series{
			name:    "download",
			title:   fmt.Sprintf("Blob download, %d MiB blob (Go client, %s window per point)", p.dlSize>>20, p.dlDur),
			heads:   []string{"conc", "metric"},
			servers: o.servers,
			key:     byConcMetric,
			notes:   []string{"MB/s = 10^6 bytes/s; CPU s/GB = server utime+stime per 10^9 bytes sent (lower is better)"},
		},
		push: &series{
			name:    "push",
			title:   fmt.Sprintf("Blob push, %d MiB distinct blobs (POST, one PATCH, PUT ?digest=)", p.pushSize>>20),
			heads:   []string{"conc", "metric"},
			servers: registries,
			key:     byConcMetric,
			notes:   []string{"CPU s/GB = server utime+stime per 10^9 bytes received (lower is better)"},
		},
		rss:        map[string]float64{},
		pushPhases: map[int]map[string]*phaseSum{},
		servers:    o.servers,
		only:       o.only,
	}
	for _, m := range []string{"GET", "HEAD"} {
		for _, c := range p.manConc {
			var t *target
			if c >= 16 {
				t = &target{ref: "v3", atLeast: true, bound: 2}
			}
			res.manifest.addRow(res.manifest.key(c, m), "%.0f", t)
			res.manifestCPU.addRow(res.manifest.key(c, m), "%.0f", nil)
		}
	}
	for _, c := range p.dlConc {
		res.download.addRow(byConcMetric(c, "MB/s"), "%.0f", &target{ref: "fileserver", atLeast: true, bound: 0.95})
		res.download.addRow(byConcMetric(c, "CPU s/GB"), "%.3f", &target{ref: "fileserver", bound: 1.2})
	}
	for _, c := range p.pushConc {
		res.push.addRow(byConcMetric(c, "MB/s"), "%.0f", &target{ref: "v3", atLeast: true, bound: 1.25})
		res.push.addRow(byConcMetric(c, "CPU s/GB"), "%.3f", nil)
	}
	return res
}

// tables lays out every selected measurement as tables, with the summary of targets.
func (res *results) tables() []table {
	var ts []table
	add := func(name string, s *series) {
		if slices.Contains(res.only, name) {
			ts = append(ts, s.table())
		}
	}
	add("manifest", res.manifest)
	add("manifest", res.manifestCPU)
	add("download", res.download)
	if slices.Contains(res.only, "push") {
		t := res.push.table()
		for _, c := range slices.Sorted(maps.Keys(res.pushPhases)) {
			var per []string
			for _, name := range res.servers {
				if ps := res.pushPhases[c][name]; ps != nil {
					avg := func(i int) time.Duration { return (ps.total[i] / time.Duration(ps.blobs)).Round(time.Millisecond) }
					per = append(per, fmt.Sprintf("%s POST %s, PATCH %s, PUT %s", name, avg(0), avg(1), avg(2)))
				}
			}
			t.notes = append(t.notes, fmt.Sprintf("mean time per blob at c=%d: %s", c, strings.Join(per, "; ")))
		}
		ts = append(ts, t)
	}

	rss := &series{name: "rss", title: "Peak RSS after all loads (VmHWM), MiB", heads: []string{"metric"}, servers: res.servers}
	rss.addRow([]string{"peak RSS"}, "%.1f", &target{bound: 100, unit: "MiB"})
	for name, v := range res.rss {
		rss.rows[0].vals[name] = value(v)
	}
	ts = append(ts, rss.table())

	sum := table{title: "Targets", head: []string{"measurement", "point", "target", "value", "verdict"}, left: 3}
	for _, s := range []*series{res.manifest, res.download, res.push, rss} {
		if s != rss && !slices.Contains(res.only, s.name) {
			continue
		}
		for _, r := range s.rows {
			if r.target == nil {
				continue
			}
			verdict, x, ok := r.target.check(r.vals)
			v := "-"
			if ok && r.target.ref != "" {
				v = fmt.Sprintf("%.2fx", x)
			} else if ok {
				v = fmt.Sprintf("%.1f %s", x, r.target.unit)
			}
			sum.rows = append(sum.rows, []string{s.name, strings.Join(r.labels, " "), r.target.String(), v, verdict})
		}
	}
	ts = append(ts, sum)
	if len(res.errors) > 0 {
		ts = append(ts, table{title: "ERRORS", head: []string{"server: error"}, left: 1, rows: rowsOf(res.errors)})
	}
	return ts
}

func rowsOf(lines []string) [][]string {
	var rows [][]string
	for _, l := range lines {
		rows = append(rows, []string{l})
	}
	return rows
}

// table turns a series into a table: one column per server, then berth's ratio to each other
// server, then the target and whether berth meets it.
func (s *series) table() table {
	t := table{title: s.title, notes: s.notes, left: len(s.heads)}
	t.head = append(slices.Clone(s.heads), s.servers...)
	var refs []string
	if slices.Contains(s.servers, "berth") {
		for _, name := range s.servers {
			if name != "berth" {
				refs = append(refs, name)
				t.head = append(t.head, "berth/"+name)
			}
		}
	}
	t.head = append(t.head, "target", "verdict")
	var errs []string
	for _, r := range s.rows {
		line := slices.Clone(r.labels)
		for _, name := range s.servers {
			c := r.vals[name]
			switch {
			case c.ok:
				line = append(line, fmt.Sprintf(r.format, c.v))
			case c.err != "":
				line = append(line, "FAILED")
				errs = append(errs, fmt.Sprintf("%s %s: %s", name, strings.Join(r.labels, " "), c.err))
			default:
				line = append(line, "-")
			}
		}
		for _, ref := range refs {
			b, x := r.vals["berth"], r.vals[ref]
			if b.ok && x.ok && x.v != 0 {
				line = append(line, fmt.Sprintf("%.2fx", b.v/x.v))
			} else {
				line = append(line, "-")
			}
		}
		if r.target != nil {
			verdict, _, _ := r.target.check(r.vals)
			line = append(line, r.target.String(), verdict)
		} else {
			line = append(line, "", "")
		}
		t.rows = append(t.rows, line)
	}
	t.notes = append(t.notes, errs...)
	if n := s.noisiest(); n != "" {
		t.notes = append(t.notes, n)
	}
	if n := s.widest(); n != "" {
		t.notes = append(t.notes, n)
	}
	return t
}

// widest describes, when there were several rounds, the point whose samples differ most.
func (s *series) widest() string {
	var most float64
	where, rounds := "", 0
	for _, r := range s.rows {
		for _, name := range s.servers {
			if c := r.vals[name]; c.ok && len(c.samples) > 1 && c.spread() >= most {
				most, where, rounds = c.spread(), name+", "+strings.Join(r.labels, " "), len(c.samples)
			}
		}
	}
	if where == "" {
		return ""
	}
	return fmt.Sprintf("each number is the median of %d rounds; the widest spread is max/min %.2fx (at %s)", rounds, most, where)
}

// noisiest describes the point where other processes used the most CPU, as a warning when that
// is enough to disturb the numbers.
func (s *series) noisiest() string {
	var most float64
	where := ""
	for _, r := range s.rows {
		for _, name := range s.servers {
			if c := r.vals[name]; c.meter && c.noise >= most {
				most, where = c.noise, name+", "+strings.Join(r.labels, " ")
			}
		}
	}
	if where == "" {
		return ""
	}
	if most >= noiseWarn {
		return fmt.Sprintf("WARNING: other processes used up to %.2f CPU cores meanwhile (at %s): these numbers are disturbed", most, where)
	}
	return fmt.Sprintf("other processes used at most %.2f CPU cores meanwhile (at %s)", most, where)
}

// noiseWarn is the CPU other processes may use during a point before its numbers are flagged.
const noiseWarn = 0.15

// render is the plain-text report.
func (res *results) render() string {
	var b strings.Builder
	for _, t := range res.tables() {
		t.text(&b)
		b.WriteString("\n")
	}
	return b.String()
}

// markdown is the same report in markdown.
func (res *results) markdown() string {
	var b strings.Builder
	for _, t := range res.tables() {
		t.markdown(&b)
		b.WriteString("\n")
	}
	return b.String()
}

// table is a title, a header, rows and notes; the first left columns are left-aligned.
type table struct {
	title string
	head  []string
	rows  [][]string
	notes []string
	left  int
}

// leftAligned: the label columns, and the target and verdict columns that end a table.
func (t table) leftAligned(i int) bool {
	return i < t.left || i >= len(t.head)-2 && t.head[len(t.head)-1] == "verdict"
}

func (t table) widths() []int {
	w := make([]int, len(t.head))
	for _, line := range append([][]string{t.head}, t.rows...) {
		for i, c := range line {
			w[i] = max(w[i], utf8.RuneCountInString(c))
		}
	}
	return w
}

func (t table) text(b *strings.Builder) {
	fmt.Fprintf(b, "%s\n", t.title)
	w := t.widths()
	for li, line := range append([][]string{t.head}, t.rows...) {
		for i, c := range line {
			pad := strings.Repeat(" ", w[i]-utf8.RuneCountInString(c))
			if t.leftAligned(i) {
				b.WriteString(c + pad)
			} else {
				b.WriteString(pad + c)
			}
			if i < len(line)-1 {
				b.WriteString("  ")
			}
		}
		b.WriteString("\n")
		if li == 0 {
			total := 0
			for _, x := range w {
				total += x + 2
			}
			b.WriteString(strings.Repeat("-", total-2) + "\n")
		}
	}
	for _, n := range t.notes {
		fmt.Fprintf(b, "  note: %s\n", n)
	}
}

func (t table) markdown(b *strings.Builder) {
	fmt.Fprintf(b, "### %s\n\n", t.title)
	b.WriteString("| " + strings.Join(t.head, " | ") + " |\n|")
	for i := range t.head {
		if t.leftAligned(i) {
			b.WriteString(" --- |")
		} else {
			b.WriteString(" ---: |")
		}
	}
	b.WriteString("\n")
	for _, line := range t.rows {
		b.WriteString("| " + strings.Join(line, " | ") + " |\n")
	}
	if len(t.notes) > 0 {
		b.WriteString("\n")
		for _, n := range t.notes {
			fmt.Fprintf(b, "- %s\n", n)
		}
	}
}
