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
	lower   bool    // a lower bound: the run was cut at a deadline (shown as ">v")
}

func value(v float64) cell             { return cell{v: v, ok: true, samples: []float64{v}} }
func measuredBy(v, noise float64) cell { c := value(v); c.noise, c.meter = noise, true; return c }
func failure(msg string) cell          { return cell{err: msg} }
func failed(err error) cell            { return cell{err: err.Error()} }

// atLeast is a lower bound: what a run cut at its deadline had reached.
func atLeast(v float64) cell { c := value(v); c.lower = true; return c }

// show formats the cell's number; a lower bound gets a ">".
func (c cell) show(format string) string {
	s := fmt.Sprintf(format, c.v)
	if c.lower {
		s = ">" + s
	}
	return s
}

// merge adds the samples of another round.
func (c cell) merge(n cell) cell {
	c.samples = append(slices.Clone(c.samples), n.samples...)
	c.noise, c.meter = max(c.noise, n.noise), c.meter || n.meter
	c.lower = c.lower || n.lower
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

// goal is what berth should achieve at one row.
type goal interface {
	String() string
	// check is the verdict (met, MISSED or n/a) and the value it judged, given the row's cells.
	check(vals map[string]cell) (verdict, shown string)
}

// target is a goal for berth: a bound on a ratio berth/ref, or on berth's own value (ref "").
type target struct {
	of      string // the server judged; default berth
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
		return fmt.Sprintf("%s < %g %s", t.judged(), t.bound, t.unit)
	}
	return fmt.Sprintf("%s/%s %s %.2fx", t.judged(), t.ref, op, t.bound)
}

func (t target) judged() string {
	if t.of == "" {
		return "berth"
	}
	return t.of
}

// check says whether berth meets the target, given the row's cells.
func (t target) check(vals map[string]cell) (string, string) {
	b := vals[t.judged()]
	if !b.ok {
		return "n/a", "-"
	}
	x := b.v
	if t.ref != "" {
		r := vals[t.ref]
		if !r.ok || r.v == 0 {
			return "n/a", "-"
		}
		x = b.v / r.v
	}
	shown := fmt.Sprintf("%.1f %s", x, t.unit)
	if t.ref != "" {
		shown = fmt.Sprintf("%.2fx", x)
	}
	met := x <= t.bound
	switch {
	case t.ref == "" && !t.atLeast:
		met = x < t.bound
	case t.atLeast:
		met = x >= t.bound
	}
	if met {
		return "met", shown
	}
	return "MISSED", shown
}

// equals is the goal that each of some servers' value is exactly n (a count of requests).
type equals struct {
	servers []string
	n       float64
	why     string // e.g. "1 per blob"
}

func (e equals) String() string {
	s := fmt.Sprintf("%s = %g", strings.Join(e.servers, ", "), e.n)
	if e.why != "" {
		s += " (" + e.why + ")"
	}
	return s
}

func (e equals) check(vals map[string]cell) (string, string) {
	verdict := "met"
	var shown []string
	for _, name := range e.servers {
		c := vals[name]
		switch {
		case !c.ok:
			shown = append(shown, "-")
			if verdict == "met" {
				verdict = "n/a"
			}
		case c.v > e.n || (!c.lower && c.v != e.n):
			shown = append(shown, c.show("%g"))
			verdict = "MISSED"
		case c.lower: // at least c.v <= n: could still be n, or not
			shown = append(shown, c.show("%g"))
			if verdict == "met" {
				verdict = "n/a"
			}
		default:
			shown = append(shown, c.show("%g"))
		}
	}
	return verdict, strings.Join(shown, ", ")
}

// relative is the goal that a server's value here is at most bound times its value in another
// row (base): its wall time at N = 50 against N = 1, say.
type relative struct {
	server string
	base   *row
	what   string // the base row, as the target's text names it
	bound  float64
}

func (r relative) String() string {
	return fmt.Sprintf("%s <= %.2fx its %s", r.server, r.bound, r.what)
}

func (r relative) check(vals map[string]cell) (string, string) {
	c, b := vals[r.server], r.base.vals[r.server]
	if !c.ok || !b.ok || b.v == 0 {
		return "n/a", "-"
	}
	x := c.v / b.v
	shown := fmt.Sprintf("%.2fx", x)
	switch {
	case c.lower && b.lower:
		return "n/a", "-"
	case c.lower:
		shown = ">" + shown
		if x <= r.bound {
			return "n/a", shown
		}
		return "MISSED", shown
	case b.lower:
		shown = "<" + shown
		if x <= r.bound {
			return "met", shown
		}
		return "n/a", shown
	case x <= r.bound:
		return "met", shown
	}
	return "MISSED", shown
}

// allOf is several goals at one row (manifest GET: against v3, against the memory server, and
// berth-s3pg against v3-s3): the table shows them all, the summary gives each a line of its own.
type allOf []goal

func (a allOf) String() string {
	var s []string
	for _, g := range a {
		s = append(s, g.String())
	}
	return strings.Join(s, "; ")
}

// check is the worst verdict: MISSED if any is, met if all are, else n/a.
func (a allOf) check(vals map[string]cell) (string, string) {
	verdict := "met"
	var shown []string
	for _, g := range a {
		v, s := g.check(vals)
		shown = append(shown, s)
		switch {
		case v == "MISSED":
			verdict = v
		case v != "met" && verdict == "met":
			verdict = v
		}
	}
	return verdict, strings.Join(shown, "; ")
}

// goals lists the goals of a row's target.
func goals(g goal) []goal {
	if a, ok := g.(allOf); ok {
		return a
	}
	return []goal{g}
}

// allGoals is the goals given, nil ones left out, as one goal (nil for none).
func allGoals(gs ...goal) goal {
	var a allOf
	for _, g := range gs {
		if g != nil {
			a = append(a, goals(g)...)
		}
	}
	switch len(a) {
	case 0:
		return nil
	case 1:
		return a[0]
	}
	return a
}

// row is one point of a measurement: a concurrency and a metric (or a method), every server's cell.
type row struct {
	labels []string
	format string // of the values
	vals   map[string]cell
	target goal
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
	refs    []string // the servers berth is compared with (nil: every other server)
	label   string   // in the summary of targets (default: name)
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

func (s *series) addRow(labels []string, format string, t goal) *row {
	r := &row{labels: labels, format: format, vals: map[string]cell{}, target: t}
	s.rows = append(s.rows, r)
	return r
}

// find is the row with these labels, or nil.
func (s *series) find(labels ...string) *row {
	for _, r := range s.rows {
		if slices.Equal(r.labels, labels) {
			return r
		}
	}
	return nil
}

// results holds every number of the run.
type results struct {
	manifest, manifestCPU *series
	auth                  *series // manifest requests/s of berth with and without authentication
	enc                   *series // download MB/s of berth with and without encryption at rest
	download, push        *series
	rss                   map[string]cell // peak RSS per server, a sample per round
	pushPhases            map[int]map[string]*phaseSum
	proxy                 []*series // the proxy tables, in order (nil unless -only has proxy)
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
	// berth-enc and berth-s3pg-redir are measured on downloads only.
	registries := slices.DeleteFunc(slices.Clone(o.servers), func(s string) bool {
		return s == "fileserver" || s == "berth-enc" || s == "berth-s3pg-redir"
	})
	// The memory server answers manifests only.
	registryOnly := slices.DeleteFunc(slices.Clone(registries), func(s string) bool { return s == "memory" })
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
		auth: &series{
			name:    "manifest",
			label:   "manifest auth",
			title:   "Manifest GET/HEAD requests/s with token authentication (berth-auth: every request carries a Bearer token) and without (berth --dev)",
			heads:   []string{"method", "conc"},
			servers: slices.DeleteFunc([]string{"berth", "berth-auth"}, func(s string) bool { return !slices.Contains(o.servers, s) }),
			key:     func(conc int, method string) []string { return []string{method, strconv.Itoa(conc)} },
		},
		download: &series{
			name:    "download",
			title:   fmt.Sprintf("Blob download, %d MiB blob (Go client, %s window per point)", p.dlSize>>20, p.dlDur),
			heads:   []string{"conc", "metric"},
			servers: slices.DeleteFunc(slices.Clone(o.servers), func(s string) bool { return s == "berth-enc" || s == "memory" }),
			key:     byConcMetric,
			notes: []string{"MB/s = 10^6 bytes/s; CPU s/GB = server utime+stime per 10^9 bytes sent (lower is better)",
				"first MB/s: the first download after the push, one client alone (one sample); the other rows download the blob again and again"},
		},
		enc: newEncSeries(o, p),
		push: &series{
			name:    "push",
			title:   fmt.Sprintf("Blob push, %d MiB distinct blobs (POST, one PATCH, PUT ?digest=)", p.pushSize>>20),
			heads:   []string{"conc", "metric"},
			servers: registryOnly,
			key:     byConcMetric,
			notes:   []string{"CPU s/GB = server utime+stime per 10^9 bytes received (lower is better)"},
		},
		rss:        map[string]cell{},
		pushPhases: map[int]map[string]*phaseSum{},
		servers:    o.servers,
		only:       o.only,
	}
	// The bounds for berth on S3 and PostgreSQL, against Distribution on the same S3.
	s3 := slices.Contains(o.servers, "berth-s3pg") && slices.Contains(o.servers, "v3-s3")
	s3Target := func(bound float64) goal {
		if !s3 {
			return nil
		}
		return &target{of: "berth-s3pg", ref: "v3-s3", atLeast: true, bound: bound}
	}
	for _, m := range []string{"GET", "HEAD"} {
		for _, c := range p.manConc {
			var v3, mem, onS3 goal
			if c >= 16 {
				v3 = &target{ref: "v3", atLeast: true, bound: 2}
			}
			if m == "GET" {
				// The scale-out issue's bound: a manifest pull costs berth little more than
				// answering the bytes from a map (the memory server).
				mem = &target{ref: "memory", atLeast: true, bound: 0.85}
				if c >= 16 {
					onS3 = s3Target(2)
				}
			}
			res.manifest.addRow(res.manifest.key(c, m), "%.0f", allGoals(v3, mem, onS3, metricsCost(o)))
			res.manifestCPU.addRow(res.manifest.key(c, m), "%.0f", nil)
			res.auth.addRow(res.manifest.key(c, m), "%.0f", &target{of: "berth-auth", ref: "berth", atLeast: true, bound: 0.8})
		}
	}
	res.download.addRow(byConcMetric(1, "first MB/s"), "%.0f", nil)
	if slices.Contains(o.servers, "berth-s3pg-redir") {
		// A redirected GET's body comes from the bucket: what berth itself sends is the 307.
		res.download.addRow(byConcMetric(1, "B via server"), "%.0f", &target{of: "berth-s3pg-redir", bound: 4096, unit: "B"})
		res.download.notes = append(res.download.notes, "B via server: the bytes berth-s3pg-redir itself sent (a counting TCP proxy in front of it) for one whole GET of the blob, the 307 to the bucket included; "+
			"its MB/s and CPU rows follow the 307, the client downloading from versitygw")
	}
	for _, c := range p.dlConc {
		res.download.addRow(byConcMetric(c, "MB/s"), "%.0f", allGoals(&target{ref: "fileserver", atLeast: true, bound: 0.95}, metricsCost(o)))
		res.download.addRow(byConcMetric(c, "CPU s/GB"), "%.3f", &target{ref: "fileserver", bound: 1.2})
	}
	for _, c := range p.pushConc {
		res.push.addRow(byConcMetric(c, "MB/s"), "%.0f", allGoals(&target{ref: "v3", atLeast: true, bound: 1.25}, s3Target(1.25)))
		res.push.addRow(byConcMetric(c, "CPU s/GB"), "%.3f", nil)
	}
	if slices.ContainsFunc(o.servers, onEngines) {
		note := "servers on the engines (berth-s3pg*, v3-s3): the CPU of PostgreSQL and versitygw is counted neither as the server's nor as other processes'; " +
			"berth-s3pg-3 is three replicas behind HAProxy (berth-s3pg-1 one), its CPU theirs and HAProxy's, its peak RSS its largest replica's"
		for _, sr := range []*series{res.manifest, res.manifestCPU, res.download, res.push} {
			sr.notes = append(sr.notes, note)
		}
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
	if slices.Contains(res.auth.servers, "berth-auth") {
		add("manifest", res.auth)
	}
	add("download", res.download)
	if res.encrypted() {
		ts = append(ts, res.encTable())
	}
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

	summed := []*series{res.manifest, res.download, res.push}
	if slices.Contains(res.auth.servers, "berth-auth") {
		summed = append(summed, res.auth)
	}
	if res.encrypted() {
		summed = append(summed, res.enc)
	}
	if slices.ContainsFunc(res.only, isStandard) {
		rss := &series{name: "rss", title: "Peak RSS after all loads (VmHWM), MiB", heads: []string{"metric"}, servers: res.servers}
		rss.addRow([]string{"peak RSS"}, "%.1f", &target{bound: 100, unit: "MiB"})
		maps.Copy(rss.rows[0].vals, res.rss)
		ts = append(ts, rss.table())
		summed = append(summed, rss)
	}
	for _, s := range res.proxy {
		ts = append(ts, s.table())
	}
	summed = append(summed, res.proxy...)

	sum := table{title: "Targets", head: []string{"measurement", "point", "target", "value", "verdict"}, left: 3}
	for _, s := range summed {
		if s.name != "rss" && !slices.Contains(res.only, s.name) {
			continue
		}
		label := s.name
		if s.label != "" {
			label = s.label
		}
		for _, r := range s.rows {
			if r.target == nil {
				continue
			}
			for _, g := range goals(r.target) {
				verdict, v := g.check(r.vals)
				sum.rows = append(sum.rows, []string{label, strings.Join(r.labels, " "), g.String(), v, verdict})
			}
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
	pairs := s.ratioPairs()
	for _, p := range pairs {
		t.head = append(t.head, p[0]+"/"+p[1])
	}
	t.head = append(t.head, "target", "verdict")
	var errs []string
	for _, r := range s.rows {
		line := slices.Clone(r.labels)
		for _, name := range s.servers {
			c := r.vals[name]
			switch {
			case c.ok:
				line = append(line, c.show(r.format))
			case c.err != "":
				line = append(line, "FAILED")
				errs = append(errs, fmt.Sprintf("%s %s: %s", name, strings.Join(r.labels, " "), c.err))
			default:
				line = append(line, "-")
			}
		}
		for _, p := range pairs {
			line = append(line, ratio(r.vals[p[0]], r.vals[p[1]]))
		}
		if r.target != nil {
			verdict, _ := r.target.check(r.vals)
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

// ratioPairs are the ratio columns, numerator and denominator: berth against every other server
// (or s.refs) not on the engines; each berth on the engines against v3-s3; three replicas
// against one.
func (s *series) ratioPairs() [][2]string {
	var pairs [][2]string
	has := func(name string) bool { return slices.Contains(s.servers, name) }
	for _, name := range s.servers {
		if has("berth") && name != "berth" && !onEngines(name) && (s.refs == nil || slices.Contains(s.refs, name)) {
			pairs = append(pairs, [2]string{"berth", name})
		}
	}
	for _, name := range s.servers {
		if has("v3-s3") && strings.HasPrefix(name, "berth-s3pg") {
			pairs = append(pairs, [2]string{name, "v3-s3"})
		}
	}
	for _, ref := range []string{"berth-s3pg", "berth-s3pg-1"} {
		if has(ref) && has("berth-s3pg-3") {
			pairs = append(pairs, [2]string{"berth-s3pg-3", ref})
		}
	}
	return pairs
}

// ratio is b/x for a ratio column: "<" when x is a lower bound, ">" when b is.
func ratio(b, x cell) string {
	if !b.ok || !x.ok || x.v == 0 || b.lower && x.lower {
		return "-"
	}
	r := b.v / x.v
	s := fmt.Sprintf("%.2fx", r)
	if r < 0.1 {
		s = fmt.Sprintf("%.3fx", r)
	}
	switch {
	case b.lower:
		s = ">" + s
	case x.lower:
		s = "<" + s
	}
	return s
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

// metricsCost is the operations issue's bound on what berth's metrics cost: manifest and blob
// GETs with metrics on (berth, the default) at least 0.95 of those with metrics off.
func metricsCost(o options) goal {
	if !slices.Contains(o.servers, "berth-nometrics") || !slices.Contains(o.servers, "berth") {
		return nil
	}
	return &target{ref: "berth-nometrics", atLeast: true, bound: 0.95}
}
