package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// The packages of a small module that go test runs for real, so that the report reads what
// cmd/test2json writes today, not what we think it writes.
var module = map[string]string{
	"go.mod": "module example.com/m\n\ngo 1.21\n",
	"pass/pass_test.go": `package pass

import "testing"

func TestOK(t *testing.T) { t.Log("quiet when it passes") }

func TestTable(t *testing.T) {
	for _, n := range []string{"one", "two"} {
		t.Run(n, func(t *testing.T) { t.Parallel() })
	}
}

func TestNoKVM(t *testing.T) {
	t.Log("looking for /dev/kvm")
	t.Skip("no /dev/kvm on this machine")
}
`,
	"skip/skip_test.go": `package skip

import "testing"

func TestTodo(t *testing.T) { t.Skip("not implemented yet") }

func TestNoKVM(t *testing.T) {
	t.Skipf("%s:\n\twanted for the VM tests", "no /dev/kvm on this machine")
}

func TestSub(t *testing.T) {
	t.Run("later", func(t *testing.T) { t.SkipNow() })
	t.Run("now", func(t *testing.T) {})
}
`,
	"fail/fail_test.go": `package fail

import "testing"

func TestFine(t *testing.T) {}

func TestBroken(t *testing.T) {
	t.Log("setting up the broken thing")
	t.Run("case", func(t *testing.T) {
		t.Parallel()
		t.Errorf("got %d, want %d", 1, 2)
	})
	t.Run("other", func(t *testing.T) { t.Log("a passing sibling") })
}
`,
	"exit/exit_test.go": `package exit

import (
	"os"
	"testing"
)

func TestFirst(t *testing.T) {}

func TestExits(t *testing.T) {
	t.Log("about to leave")
	os.Exit(3)
}
`,
	"none/none.go":       "package none\n",
	"none/none_test.go":  "package none\n\nfunc helper() {}\n",
	"nofiles/nofiles.go": "package nofiles\n",
	"build/build_test.go": `package build

import "testing"

func TestX(t *testing.T) { undefinedFunction() }
`,
}

// goTestJSON writes the module into a temp dir and returns the output of go test -json there.
func goTestJSON(t *testing.T, args ...string) []byte {
	t.Helper()
	dir := t.TempDir()
	for name, content := range module {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command("go", append([]string{"test", "-json", "-count=1", "-timeout=60s"}, args...)...)
	cmd.Dir = dir
	// Nothing of the outer run (-race in GOFLAGS, say) reaches the inner one.
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off", "GOPROXY=off", "GOTOOLCHAIN=local")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatalf("go test: %v\n%s", err, stderr.String())
	}
	if len(out) == 0 {
		t.Fatalf("go test printed no events; stderr:\n%s", stderr.String())
	}
	return out
}

const kvmAllowed = `
# VM tests need a kernel feature the machine may not have
example.com/m/pass | TestNoKVM | no /dev/kvm
`

func report(t *testing.T, events []byte, allow string) (string, int) {
	t.Helper()
	entries, err := parseAllowlist(allow)
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	code := run(bytes.NewReader(events), &out, entries)
	return out.String(), code
}

func wantIn(t *testing.T, out string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if !strings.Contains(out, p) {
			t.Errorf("the report lacks %q:\n%s", p, out)
		}
	}
}

func wantNotIn(t *testing.T, out string, parts ...string) {
	t.Helper()
	for _, p := range parts {
		if strings.Contains(out, p) {
			t.Errorf("the report has %q:\n%s", p, out)
		}
	}
}

// TestReportEverything: one run over a module with every kind of outcome. The failed test's
// whole output is shown as go test -v shows it, passing tests stay quiet, and each problem is
// named in the verdict.
func TestReportEverything(t *testing.T) {
	out, code := report(t, goTestJSON(t, "./..."), kvmAllowed)
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	// The failed test, whole: its own log, the failed subtest's message, the passing sibling.
	wantIn(t, out,
		"=== RUN   TestBroken\n",
		"setting up the broken thing\n",
		"fail_test.go:11: got 1, want 2\n",
		"--- FAIL: TestBroken/case",
		"a passing sibling\n",
		"--- FAIL: TestBroken (",
		"FAIL\texample.com/m/fail\t",
	)
	wantNotIn(t, out, "quiet when it passes", "=== RUN   TestFine")
	// The test that took the process down with it.
	wantIn(t, out, "--- DID NOT FINISH: TestExits", "about to leave", "tests that did not finish: example.com/m/exit TestExits")
	// The build failure, in the go command's words.
	wantIn(t, out, "undefined: undefinedFunction", "builds failed: example.com/m/build")
	// Every skip with its reason and verdict; multi-line reasons are joined.
	wantIn(t, out,
		"example.com/m/pass TestNoKVM\n    reason:  pass_test.go:15: no /dev/kvm on this machine\n    verdict: allowed (line 3: VM tests need a kernel feature the machine may not have)",
		"example.com/m/skip TestTodo\n    reason:  skip_test.go:5: not implemented yet\n    verdict: NOT ON THE ALLOWLIST",
		"example.com/m/skip TestNoKVM\n    reason:  skip_test.go:8: no /dev/kvm on this machine: wanted for the VM tests\n    verdict: NOT ON THE ALLOWLIST",
		"example.com/m/skip TestSub/later\n    reason:  (no reason given)\n    verdict: NOT ON THE ALLOWLIST",
		"3 skips not on the allowlist",
	)
	// Counts per package (tests and subtests), the package without tests, the one without files.
	wantIn(t, out,
		"example.com/m/pass",
		"packages that ran no tests (a -run pattern that matches nothing there?): example.com/m/none\n",
		"no test files: example.com/m/nofiles",
		"packages failed: ",
	)
	for _, line := range []string{"example.com/m/pass  ", "example.com/m/skip  ", "example.com/m/fail  "} {
		i := strings.Index(out, "\n"+line)
		if i < 0 {
			t.Fatalf("no table line for %s:\n%s", line, out)
		}
		row := strings.Fields(strings.SplitN(out[i+1:], "\n", 2)[0])
		want := map[string]string{
			"example.com/m/pass  ": "4 0 1",
			"example.com/m/skip  ": "2 0 3",
			"example.com/m/fail  ": "2 2 0",
		}[line]
		if got := strings.Join(row[1:4], " "); got != want {
			t.Errorf("%s: passed failed skipped = %s, want %s", line, got, want)
		}
	}
}

// TestReportGreen: passes and allowed skips only: exit 0.
func TestReportGreen(t *testing.T) {
	events := goTestJSON(t, "./pass/")
	out, code := report(t, events, kvmAllowed)
	if code != 0 {
		t.Errorf("exit status %d, want 0:\n%s", code, out)
	}
	wantIn(t, out, "4 passed, 0 failed, 1 skipped (1 allowed) in 1 packages", "\nPASS\n")

	// The same run without the allowlist entry fails, and so does an entry for another reason.
	if out, code := report(t, events, ""); code != 1 {
		t.Errorf("without an allowlist: exit status %d, want 1:\n%s", code, out)
	}
	other := "# machine-dependent\nexample.com/m/pass | TestNoKVM | no /dev/tun\n"
	if out, code := report(t, events, other); code != 1 || !strings.Contains(out, "NOT ON THE ALLOWLIST") {
		t.Errorf("with an entry for another reason: exit status %d, want 1:\n%s", code, out)
	}
	// The allowlist names a test, not a prefix of it.
	prefix := "# machine-dependent\nexample.com/m/pass | TestNo | no /dev/kvm\n"
	if out, code := report(t, events, prefix); code != 1 {
		t.Errorf("with an entry for a prefix of the name: exit status %d, want 1:\n%s", code, out)
	}
}

// TestReportRunMatchesNothing: a targeted run whose -run pattern matches nothing fails, as
// does a package where it matches nothing.
func TestReportRunMatchesNothing(t *testing.T) {
	out, code := report(t, goTestJSON(t, "-run", "^TestRenamedAway$", "./pass/"), "")
	if code != 1 {
		t.Errorf("exit status %d, want 1:\n%s", code, out)
	}
	wantIn(t, out, "packages that ran no tests (a -run pattern that matches nothing there?): example.com/m/pass")

	out, code = report(t, goTestJSON(t, "-run", "^TestOK$", "./pass/", "./fail/"), "")
	if code != 1 {
		t.Errorf("exit status %d, want 1:\n%s", code, out)
	}
	wantIn(t, out, "packages that ran no tests (a -run pattern that matches nothing there?): example.com/m/fail\n")
}

// TestReportNoInput: an empty or non-JSON stream is no success.
func TestReportNoInput(t *testing.T) {
	for _, in := range []string{"", "go: cannot find main module\n"} {
		var out bytes.Buffer
		if code := run(strings.NewReader(in), &out, nil); code != 1 {
			t.Errorf("input %q: exit status %d, want 1:\n%s", in, code, out.String())
		}
		if !strings.Contains(out.String(), "no test ran at all") {
			t.Errorf("input %q: report %q", in, out.String())
		}
	}
}

func TestParseAllowlist(t *testing.T) {
	for _, c := range []struct{ text, err string }{
		{"example.com/m | TestX | reason", "no comment above it"},
		{"# why\n\nexample.com/m | TestX | reason", "no comment above it"}, // the comment belongs to nothing
		{"# why\nexample.com/m | TestX", "want PACKAGE | TEST | REASON"},
		{"# why\nexample.com/m | TestX | a | b", "want PACKAGE | TEST | REASON"},
		{"# why\nexample.com/m | TestX | ", "all required"},
		{"# why\nexample.com/m | Test( | reason", "TEST"},
		{"# why\nexample.com/m | TestX | re(", "REASON"},
	} {
		if _, err := parseAllowlist(c.text); err == nil || !strings.Contains(err.Error(), c.err) {
			t.Errorf("%q: err = %v, want one saying %q", c.text, err, c.err)
		}
	}
	got, err := parseAllowlist("\n# one\n# two\n a | TestA/.* | r1 \n\n# three\nb | TestB | r2\n")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].pkg != "a" || got[0].why != "one two" || got[0].line != 4 || got[1].why != "three" ||
		!got[0].test.MatchString("TestA/x") || got[0].test.MatchString("TestAB") {
		t.Errorf("parsed %+v %+v", got[0], got[1])
	}
}
