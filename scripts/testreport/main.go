// Command testreport reads the output of `go test -json` and makes it a verdict that cannot be
// green on work that did not run. As the run streams, it prints what plain `go test` prints: each
// package's ok or FAIL line, build errors, and every failed test's whole output (as `go test -v`
// shows it). At the end it counts passes, failures and skips per package, lists every skipped test
// with its reason, and exits non-zero when a test or a package failed, when a test did not finish,
// when a package ran no test (a -run pattern that matches nothing in a package named on the
// command line fails), or when a test skipped without an entry in the allowlist.
//
//	go test -json ./... | testreport -allow "$ALLOWED_SKIPS"
//
// The allowlist is text, one entry a line, each entry with a comment line right above it saying why
// that skip is allowed:
//
//	# why this test may skip
//	PACKAGE | TEST | REASON
//
// PACKAGE is an import path, TEST a Go regexp that must match the whole test name (subtests
// included: TestX/case), REASON a Go regexp that must match somewhere in the skip message. Blank
// lines are ignored.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"
)

func main() {
	allow := flag.String("allow", "", "the allowlist of skips (text: see the package documentation)")
	flag.Parse()
	if flag.NArg() > 0 {
		fmt.Fprintln(os.Stderr, "usage: go test -json ... | testreport [-allow TEXT]")
		os.Exit(2)
	}
	entries, err := parseAllowlist(*allow)
	if err != nil {
		fmt.Fprintln(os.Stderr, "testreport: allowlist:", err)
		os.Exit(2)
	}
	os.Exit(run(os.Stdin, os.Stdout, entries))
}

// event is one line of `go test -json` (cmd/test2json), build events included.
type event struct {
	Time        time.Time
	Action      string
	Package     string
	ImportPath  string // build-output, build-fail
	Test        string
	Output      string
	Elapsed     float64
	FailedBuild string
}

// allowEntry is one line of the allowlist.
type allowEntry struct {
	pkg    string
	raw    string // the TEST field as written
	test   *regexp.Regexp
	reason *regexp.Regexp
	why    string
	line   int
	used   bool
}

// parseAllowlist reads the allowlist; every entry needs a comment right above it.
func parseAllowlist(text string) ([]*allowEntry, error) {
	var entries []*allowEntry
	var comment []string
	for i, raw := range strings.Split(text, "\n") {
		line := strings.TrimSpace(raw)
		switch {
		case line == "":
			comment = nil
			continue
		case strings.HasPrefix(line, "#"):
			comment = append(comment, strings.TrimSpace(strings.TrimPrefix(line, "#")))
			continue
		}
		f := strings.Split(line, "|")
		if len(f) != 3 {
			return nil, fmt.Errorf("line %d: %q: want PACKAGE | TEST | REASON", i+1, line)
		}
		for j := range f {
			f[j] = strings.TrimSpace(f[j])
		}
		if f[0] == "" || f[1] == "" || f[2] == "" {
			return nil, fmt.Errorf("line %d: %q: PACKAGE, TEST and REASON are all required", i+1, line)
		}
		if len(comment) == 0 {
			return nil, fmt.Errorf("line %d: %q: no comment above it saying why this test may skip", i+1, line)
		}
		test, err := regexp.Compile("^(?:" + f[1] + ")$")
		if err != nil {
			return nil, fmt.Errorf("line %d: TEST: %v", i+1, err)
		}
		reason, err := regexp.Compile(f[2])
		if err != nil {
			return nil, fmt.Errorf("line %d: REASON: %v", i+1, err)
		}
		entries = append(entries, &allowEntry{pkg: f[0], raw: f[1], test: test, reason: reason, why: strings.Join(comment, " "), line: i + 1})
		comment = nil
	}
	return entries, nil
}

// pkgState is what is known of one package so far.
type pkgState struct {
	name                 string
	pass, fail, skip     int
	unfinished           []string            // tests that started and never ended
	lines                map[string][]string // the output of each running top-level test, subtests included
	own                  map[string][]string // each running test's own output (for its skip reason)
	stray                []string            // test output that came after its test ended
	result               string              // the "ok" or "FAIL" line of the package
	done, failed, noTest bool
	noTestFiles          bool
	elapsed              float64
}

// skipped is one skipped test.
type skipped struct {
	pkg, test, reason string
	allowed           *allowEntry
}

type reporter struct {
	out    io.Writer
	allow  []*allowEntry
	pkgs   map[string]*pkgState
	order  []string
	skips  []skipped
	builds []string // packages whose build failed
	first  time.Time
	last   time.Time
}

// run reads the events from in, prints the report on out and returns the exit status.
func run(in io.Reader, out io.Writer, allow []*allowEntry) int {
	r := &reporter{out: out, allow: allow, pkgs: map[string]*pkgState{}}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 1<<20), 64<<20)
	for sc.Scan() {
		var e event
		if err := json.Unmarshal(sc.Bytes(), &e); err != nil || e.Action == "" {
			// Not an event (go vet's or the go command's own words): pass it on.
			fmt.Fprintln(out, sc.Text())
			continue
		}
		r.handle(e)
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(out, "testreport: reading the test output:", err)
		return 1
	}
	return r.summary()
}

func (r *reporter) pkg(name string) *pkgState {
	p := r.pkgs[name]
	if p == nil {
		p = &pkgState{name: name, lines: map[string][]string{}, own: map[string][]string{}}
		r.pkgs[name] = p
		r.order = append(r.order, name)
	}
	return p
}

func root(test string) string {
	top, _, _ := strings.Cut(test, "/")
	return top
}

func (r *reporter) handle(e event) {
	if !e.Time.IsZero() {
		if r.first.IsZero() {
			r.first = e.Time
		}
		r.last = e.Time
	}
	switch e.Action {
	case "build-output":
		fmt.Fprint(r.out, e.Output)
		return
	case "build-fail":
		r.builds = append(r.builds, e.ImportPath)
		return
	}
	p := r.pkg(e.Package)
	if e.Test == "" {
		r.packageEvent(p, e)
		return
	}
	top := root(e.Test)
	switch e.Action {
	case "run":
		if e.Test == top {
			p.lines[top] = nil
		}
		p.own[e.Test] = nil
	case "output":
		if _, running := p.lines[top]; running {
			p.lines[top] = append(p.lines[top], e.Output)
		} else {
			p.stray = append(p.stray, e.Output)
		}
		if _, running := p.own[e.Test]; running {
			p.own[e.Test] = append(p.own[e.Test], e.Output)
		}
	case "pass", "fail", "skip":
		switch e.Action {
		case "pass":
			p.pass++
		case "fail":
			p.fail++
		case "skip":
			p.skip++
			r.skipped(p, e.Test)
		}
		delete(p.own, e.Test)
		if e.Test == top {
			if e.Action == "fail" {
				fmt.Fprint(r.out, strings.Join(p.lines[top], ""))
			}
			delete(p.lines, top)
		}
	}
}

// packageEvent handles an event of the package itself: its own output and its end.
func (r *reporter) packageEvent(p *pkgState, e event) {
	switch e.Action {
	case "output":
		if e.Output == "PASS\n" { // plain go test does not print it either
			return
		}
		if strings.HasPrefix(e.Output, "ok  \t"+p.name+"\t") || strings.HasPrefix(e.Output, "FAIL\t"+p.name+"\t") {
			p.result = e.Output // printed at the end of the package, after what did not finish
			return
		}
		fmt.Fprint(r.out, e.Output)
		if strings.HasPrefix(e.Output, "testing: warning: no tests to run") {
			p.noTest = true
		}
	case "pass", "fail", "skip":
		p.done, p.elapsed = true, e.Elapsed
		// Tests still running when the package ended (a panic elsewhere, the -timeout alarm, an
		// os.Exit): their output is all there is to see.
		for _, top := range slices.Sorted(maps.Keys(p.lines)) {
			p.unfinished = append(p.unfinished, top)
			fmt.Fprintf(r.out, "--- DID NOT FINISH: %s (the package ended while it ran); its output:\n%s", top, strings.Join(p.lines[top], ""))
		}
		clear(p.lines)
		if e.Action == "fail" {
			p.failed = true
			if len(p.stray) > 0 {
				fmt.Fprint(r.out, strings.Join(p.stray, ""))
			}
		}
		fmt.Fprint(r.out, p.result)
		if e.Action == "skip" {
			p.noTestFiles = true
		}
		if e.Action == "pass" && p.pass+p.fail+p.skip == 0 {
			p.noTest = true
		}
		p.stray = nil
	}
}

// logLine is the start of a t.Log line in test output: "    file_test.go:12: ".
var logLine = regexp.MustCompile(`^\s+\S+\.go:\d+: `)

// skipped records a skipped test with its reason: the last thing it logged (t.Skip logs its
// arguments before it stops the test), continuation lines included.
func (r *reporter) skipped(p *pkgState, test string) {
	var msg []string
	for _, l := range p.own[test] {
		l = strings.TrimRight(l, "\n")
		switch t := strings.TrimSpace(l); {
		case strings.HasPrefix(t, "=== ") || strings.HasPrefix(t, "--- ") || t == "":
		case logLine.MatchString(l):
			msg = []string{t}
		default:
			msg = append(msg, t)
		}
	}
	s := skipped{pkg: p.name, test: test, reason: strings.Join(msg, " ")}
	for _, a := range r.allow {
		if a.pkg == p.name && a.test.MatchString(test) && a.reason.MatchString(s.reason) {
			s.allowed, a.used = a, true
			break
		}
	}
	r.skips = append(r.skips, s)
}

// summary prints the counts, the skips and the verdict, and returns the exit status.
func (r *reporter) summary() int {
	w := r.out
	var pass, fail, skip int
	var failedPkgs, noTests, unfinished, noFiles []string
	width := len("package")
	for _, name := range r.order {
		width = max(width, len(name))
	}
	fmt.Fprintf(w, "\n== test report\n%-*s  %6s  %6s  %7s\n", width, "package", "passed", "failed", "skipped")
	for _, name := range r.order {
		p := r.pkgs[name]
		pass, fail, skip = pass+p.pass, fail+p.fail, skip+p.skip
		note := ""
		switch {
		case p.noTestFiles:
			noFiles = append(noFiles, name)
			continue
		case !p.done:
			note = "NO RESULT (the output ended before the package did)"
			failedPkgs = append(failedPkgs, name)
		case p.failed:
			note = "FAIL"
			failedPkgs = append(failedPkgs, name)
		}
		if p.noTest {
			note = strings.TrimSpace(note + " RAN NO TESTS")
			noTests = append(noTests, name)
		}
		for _, t := range p.unfinished {
			unfinished = append(unfinished, name+" "+t)
		}
		fmt.Fprintf(w, "%-*s  %6d  %6d  %7d  %s\n", width, name, p.pass, p.fail, p.skip, note)
	}
	if len(noFiles) > 0 {
		fmt.Fprintf(w, "no test files: %s\n", strings.Join(noFiles, ", "))
	}

	var refused []skipped
	if len(r.skips) > 0 {
		fmt.Fprintf(w, "\n== skipped tests (%d)\n", len(r.skips))
		for _, s := range r.skips {
			reason := s.reason
			if reason == "" {
				reason = "(no reason given)"
			}
			verdict := "NOT ON THE ALLOWLIST"
			if s.allowed != nil {
				verdict = fmt.Sprintf("allowed (line %d: %s)", s.allowed.line, s.allowed.why)
			} else {
				refused = append(refused, s)
			}
			fmt.Fprintf(w, "%s %s\n    reason:  %s\n    verdict: %s\n", s.pkg, s.test, reason, verdict)
		}
	}
	for _, a := range r.allow {
		if !a.used {
			fmt.Fprintf(w, "note: allowlist line %d (%s | %s) matched no skip in this run\n", a.line, a.pkg, a.raw)
		}
	}

	elapsed := r.last.Sub(r.first).Round(time.Second)
	fmt.Fprintf(w, "\n%d passed, %d failed, %d skipped (%d allowed) in %d packages, %s\n",
		pass, fail, skip, skip-len(refused), len(r.order)-len(noFiles), elapsed)
	var why []string
	if fail > 0 {
		why = append(why, fmt.Sprintf("%d tests failed", fail))
	}
	if len(unfinished) > 0 {
		why = append(why, fmt.Sprintf("tests that did not finish: %s", strings.Join(unfinished, ", ")))
	}
	if len(failedPkgs) > 0 {
		why = append(why, fmt.Sprintf("packages failed: %s", strings.Join(failedPkgs, ", ")))
	}
	if len(r.builds) > 0 {
		why = append(why, fmt.Sprintf("builds failed: %s", strings.Join(r.builds, ", ")))
	}
	if len(noTests) > 0 {
		why = append(why, fmt.Sprintf("packages that ran no tests (a -run pattern that matches nothing there?): %s", strings.Join(noTests, ", ")))
	}
	if len(refused) > 0 {
		why = append(why, fmt.Sprintf("%d skips not on the allowlist (scripts/test.sh ALLOWED_SKIPS): make the test run, or list it there with the reason it may skip", len(refused)))
	}
	if len(r.order) == 0 && len(r.builds) == 0 {
		why = append(why, "no test ran at all (is this go test -json output?)")
	}
	if len(why) > 0 {
		fmt.Fprintf(w, "FAIL:\n  - %s\n", strings.Join(why, "\n  - "))
		return 1
	}
	fmt.Fprintln(w, "PASS")
	return 0
}
