// Package internal_test checks that berth's packages depend on each other one way only, so that
// backends stay swappable and the wire vocabulary stays at the bottom:
//
//	cmd -> server -> registry, proxy -> content -> storage, metadata -> oci
//	       server -> metrics (reads what registry, proxy, auth and gc count) -> those
//	                                      lifecycle (policies, evaluated on what callers read) -> oci
//	                                      events (webhooks; registry and proxy publish) -> oci
//	                             storage/<backend> -> storage, oci
//	                             metadata/<backend> -> metadata, oci
//
// enginetest (the outside engines that backends' tests run against) depends on no berth package,
// and only tests and the benchmark (bench, a development tool) import it.
package internal_test

import (
	"encoding/json"
	"errors"
	"io"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

const module = "github.com/berth/berth"

type pkg struct {
	ImportPath   string
	Deps         []string // transitive, without tests
	Imports      []string
	TestImports  []string
	XTestImports []string
	DepsErrors   []struct{ Err string }
}

// listPackages runs go list over the whole module and returns each package with the berth
// packages it depends on.
func listPackages(t *testing.T) map[string]pkg {
	t.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command:", err)
	}
	cmd := exec.Command(goBin, "list", "-e", "-json=ImportPath,Deps,Imports,TestImports,XTestImports,DepsErrors", module+"/...")
	out, err := cmd.Output()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			t.Fatalf("go list: %v\n%s", err, ee.Stderr)
		}
		t.Fatalf("go list: %v", err)
	}
	pkgs := map[string]pkg{}
	dec := json.NewDecoder(strings.NewReader(string(out)))
	for {
		var p pkg
		if err := dec.Decode(&p); err == io.EOF {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(p.ImportPath, module+"/") {
			continue
		}
		p.Deps = ours(p.Deps)
		p.Imports = ours(p.Imports)
		p.TestImports = ours(p.TestImports)
		p.XTestImports = ours(p.XTestImports)
		pkgs[strings.TrimPrefix(p.ImportPath, module+"/")] = p
	}
	return pkgs
}

// ours keeps the berth packages of deps, relative to the module.
func ours(deps []string) []string {
	var out []string
	for _, d := range deps {
		if rel, ok := strings.CutPrefix(d, module+"/"); ok {
			out = append(out, rel)
		}
	}
	return out
}

func under(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

func TestDependencies(t *testing.T) {
	pkgs := listPackages(t)
	for _, want := range []string{"internal/oci", "internal/storage", "internal/storage/fs",
		"internal/metadata", "internal/metadata/sqlite", "internal/metadata/postgres", "internal/enginetest", "internal/registry", "internal/server", "cmd/berth"} {
		if _, ok := pkgs[want]; !ok {
			t.Fatalf("go list did not report %s; it reported %v", want, slices.Sorted(func(yield func(string) bool) {
				for k := range pkgs {
					if !yield(k) {
						return
					}
				}
			}))
		}
	}

	// allowed says which berth packages p may depend on (transitively); nil means any.
	allowed := func(p string) func(dep string) bool {
		switch {
		case p == "internal/oci", p == "internal/enginetest":
			return func(string) bool { return false }
		case p == "internal/storage":
			return func(d string) bool { return d == "internal/oci" }
		case under(p, "internal/storage"): // backends and storagetest
			return func(d string) bool { return d == "internal/oci" || d == "internal/storage" }
		case p == "internal/enginetest": // servers for tests: knows nothing of berth
			return func(string) bool { return false }
		case p == "internal/metadata", p == "internal/lifecycle", // lifecycle: pure policy evaluation, no store
			p == "internal/events": // webhooks: a leaf that the registry, the cache and the server publish to
			return func(d string) bool { return d == "internal/oci" }
		case under(p, "internal/metadata"):
			return func(d string) bool { return d == "internal/oci" || d == "internal/metadata" }
		case p == "internal/content", p == "internal/migrate", p == "internal/gc": // the two stores, whatever backends they are
			return func(d string) bool {
				return d == "internal/oci" || d == "internal/storage" || d == "internal/metadata"
			}
		case under(p, "internal/registry"):
			return func(d string) bool { return !under(d, "internal/server") && !under(d, "cmd") }
		case p == "internal/metrics": // reads what the others count; the server wires it
			return func(d string) bool { return !under(d, "internal/server") && !under(d, "cmd") }
		case under(p, "cmd"):
			return nil
		default:
			return func(d string) bool { return !under(d, "cmd") }
		}
	}
	// A sanity check that go list reported what the rules look at.
	if !slices.Contains(pkgs["internal/server"].Deps, "internal/oci") ||
		!slices.Contains(pkgs["internal/storage/fs"].TestImports, "internal/storage/storagetest") {
		t.Fatalf("go list reported no dependencies: %+v", pkgs["internal/server"])
	}
	for name, p := range pkgs {
		for _, e := range p.DepsErrors {
			t.Errorf("%s: %s", name, e.Err)
		}
		ok := allowed(name)
		if ok == nil {
			continue
		}
		for _, d := range p.Deps {
			if !ok(d) {
				t.Errorf("%s depends on %s (imports %v)", name, d, p.Imports)
			}
		}
		// Tests follow the same rules (a package's own external test imports the package), and
		// backends' tests run their interface's conformance suite against the real servers that
		// enginetest starts; a layer over any metadata store (hot) runs the suite over a real
		// backend (and its replicas over PostgreSQL), the collector runs over every backend, and the layers over any blob store over real backends: sealed over both, with real keys, and
		// the memory cache over sealed over the filesystem, as berth stacks them.
		suite := func(d string) bool {
			return d == "internal/storage/storagetest" && under(name, "internal/storage") ||
				d == "internal/metadata/metadatatest" && under(name, "internal/metadata") ||
				d == "internal/enginetest" ||
				(d == "internal/metadata/sqlite" || d == "internal/metadata/postgres") && name == "internal/metadata/hot" ||
				(d == "internal/metadata/sqlite" || d == "internal/storage/fs") && name == "internal/content" ||
				(name == "internal/migrate" || name == "internal/gc") && (under(d, "internal/storage") || under(d, "internal/metadata")) ||
				name == "internal/gc" && d == "internal/content" || // its tests push as the registry does
				slices.Contains([]string{"internal/storage/fs", "internal/storage/s3", "internal/crypt"}, d) &&
					name == "internal/storage/sealed" ||
				(d == "internal/storage/sealed" || d == "internal/storage/fs") && name == "internal/storage/memcache"
		}
		for _, d := range slices.Concat(p.TestImports, p.XTestImports) {
			if d != name && !ok(d) && !suite(d) {
				t.Errorf("the tests of %s import %s", name, d)
			}
		}
	}
	// Only tests, and the benchmark, run engines.
	for name, p := range pkgs {
		if name != "bench" && slices.Contains(p.Deps, "internal/enginetest") {
			t.Errorf("%s depends on internal/enginetest, which only tests and bench may import", name)
		}
	}
	// And nothing, tests included, imports a command.
	for name, p := range pkgs {
		for _, d := range slices.Concat(p.Deps, p.TestImports, p.XTestImports) {
			if under(d, "cmd") {
				t.Errorf("%s imports %s", name, d)
			}
		}
	}
}
