package repotest

import (
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// productRoots are the folders whose packages ship in the daemons: the four
// leaves and the two daemon libraries, with their sub-packages. Benches live
// under hil, test doubles in test-helper packages (folders whose name ends
// in "test", such as slotstest, transfertest, watchdogtest or ocitest),
// which this check skips, as it skips _test.go files.
var productRoots = []string{"slots", "delta", "protocol", "watchdog", "flightd", "groundd"}

// productFile is one parsed non-test file of a product package.
type productFile struct {
	rel  string // slash-separated path from the module root
	dir  string // its folder, slash-separated
	file *ast.File
}

// productCheck is one thing no product file may do: find returns what it
// found in f, or "" when f is clean.
type productCheck struct {
	name string
	why  string
	find func(f productFile) string
}

// productChecks is the list of what TestProductHoldsOnlyProduct enforces.
var productChecks = []productCheck{
	{
		name: "imports testing",
		why:  "package testing (and testing/...) belongs in _test.go files and test-helper packages; linking it into a daemon adds its flags and code to the binary",
		find: func(f productFile) string {
			for _, imp := range f.file.Imports {
				p, _ := strconv.Unquote(imp.Path.Value)
				if p == "testing" || strings.HasPrefix(p, "testing/") {
					return "imports " + p
				}
			}
			return ""
		},
	},
	{
		name: "drops page caches",
		why:  "writing /proc/sys/vm/drop_caches is a benchmark's way to measure cold reads; on a flight computer it throws away every process's cache",
		find: func(f productFile) string {
			var found string
			ast.Inspect(f.file, func(n ast.Node) bool {
				if lit, ok := n.(*ast.BasicLit); ok && lit.Kind == token.STRING && strings.Contains(lit.Value, "drop_caches") {
					found = "string " + lit.Value
				}
				return found == ""
			})
			return found
		},
	},
	{
		name: "exists only for a benchmark",
		why:  "benches live under hil; a file or package named for a benchmark (bench.go, delta/bench) in a product folder ships bench code in the daemons",
		find: func(f productFile) string {
			if strings.Contains(strings.ToLower(filepath.Base(f.rel)), "bench") {
				return "file named for a benchmark"
			}
			for _, elem := range strings.Split(f.dir, "/") {
				if strings.Contains(strings.ToLower(elem), "bench") {
					return "in bench folder " + f.dir
				}
			}
			return ""
		},
	},
	{
		name: "declares a test double",
		why:  "test doubles live in test-helper packages (watchdogtest, transfertest, as net/http/httptest does), never in the files that ship",
		find: func(f productFile) string {
			for _, decl := range f.file.Decls {
				gd, ok := decl.(*ast.GenDecl)
				if !ok || gd.Tok != token.TYPE {
					continue
				}
				for _, spec := range gd.Specs {
					ts := spec.(*ast.TypeSpec)
					if !ts.Name.IsExported() {
						continue
					}
					doc := ts.Doc
					if doc == nil && len(gd.Specs) == 1 {
						doc = gd.Doc
					}
					if doubleName.MatchString(ts.Name.Name) {
						return "type " + ts.Name.Name
					}
					if doc != nil && forTests.MatchString(doc.Text()) {
						return "type " + ts.Name.Name + " documented as for tests"
					}
				}
			}
			return ""
		},
	},
}

var (
	doubleName = regexp.MustCompile(`^(Fake|Mock|Stub)[A-Z0-9_]`)
	forTests   = regexp.MustCompile(`(?i)\bfor (tests|testing)\b`)
)

// knownOffenders are findings that moves under way will remove, keyed by
// check name and then by file path (or a folder ending in "/", for every
// file below it). The lead deletes an entry when its move lands; an entry
// that no longer matches anything fails the test, so the list cannot rot.
var knownOffenders = map[string]map[string]string{}

// TestProductHoldsOnlyProduct enforces that no non-test file of slots,
// delta, protocol, watchdog, flightd or groundd (test-helper packages
// aside) imports testing, writes /proc/sys/vm/drop_caches, exists only for
// a benchmark or declares a test double.
func TestProductHoldsOnlyProduct(t *testing.T) {
	root := moduleRoot(t)
	files := productFiles(t, root)
	if len(files) < 20 {
		t.Fatalf("found only %d product files; the walk is broken", len(files))
	}
	for _, c := range productChecks {
		t.Run(strings.ReplaceAll(c.name, " ", "_"), func(t *testing.T) {
			allowed := knownOffenders[c.name]
			used := map[string]bool{}
			for _, f := range files {
				what := c.find(f)
				if what == "" {
					continue
				}
				if key, ok := allowedBy(allowed, f.rel); ok {
					used[key] = true
					t.Logf("%s: %s (known: %s)", f.rel, what, allowed[key])
					continue
				}
				t.Errorf("%s %s: %s\n\twhy not: %s", f.rel, c.name, what, c.why)
			}
			for key := range allowed {
				if !used[key] {
					t.Errorf("known offender %s no longer %s: delete its entry from knownOffenders", key, c.name)
				}
			}
		})
	}
	for name := range knownOffenders {
		if checkNamed(name) < 0 {
			t.Errorf("knownOffenders names check %q, which does not exist", name)
		}
	}
}

// checkNamed returns the index of the check called name, or -1.
func checkNamed(name string) int {
	return slices.IndexFunc(productChecks, func(c productCheck) bool { return c.name == name })
}

// allowedBy returns the allow-list key that covers rel: the file itself or
// a folder above it.
func allowedBy(allowed map[string]string, rel string) (string, bool) {
	if _, ok := allowed[rel]; ok {
		return rel, true
	}
	for key := range allowed {
		if strings.HasSuffix(key, "/") && strings.HasPrefix(rel, key) {
			return key, true
		}
	}
	return "", false
}

// productFiles parses every non-test .go file under productRoots, skipping
// test-helper packages (folders named *test), testdata and hidden folders.
func productFiles(t *testing.T, root string) []productFile {
	t.Helper()
	var out []productFile
	fset := token.NewFileSet()
	for _, top := range productRoots {
		err := filepath.WalkDir(filepath.Join(root, top), func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			name := d.Name()
			if d.IsDir() {
				if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata" || strings.HasSuffix(name, "test") {
					return filepath.SkipDir
				}
				return nil
			}
			if !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
				return nil
			}
			f, err := parser.ParseFile(fset, path, nil, parser.ParseComments|parser.SkipObjectResolution)
			if err != nil {
				return err
			}
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			rel = filepath.ToSlash(rel)
			out = append(out, productFile{rel: rel, dir: filepath.ToSlash(filepath.Dir(rel)), file: f})
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// moduleRoot is the repository root, two levels above this package.
func moduleRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("module root not found at %s: %v", root, err)
	}
	return root
}

// Each check must catch what it is meant to catch: a table of small
// sources, so that a check that silently stops matching fails here.
func TestProductChecksCatch(t *testing.T) {
	for _, tc := range []struct {
		check, rel, src string
		want            bool
	}{
		{"imports testing", "slots/x.go", "package slots\nimport \"testing\"\nvar _ testing.TB", true},
		{"imports testing", "slots/x.go", "package slots\nimport \"testing/fstest\"\nvar _ fstest.MapFS", true},
		{"imports testing", "slots/x.go", "package slots\nimport \"os\"\nvar _ = os.Open", false},
		{"drops page caches", "slots/x.go", "package slots\nconst p = \"/proc/sys/vm/drop_caches\"", true},
		{"drops page caches", "slots/x.go", "package slots\n// no drop_caches here, only in a comment\nconst p = 1", false},
		{"exists only for a benchmark", "slots/bench.go", "package slots", true},
		{"exists only for a benchmark", "delta/bench/table.go", "package bench", true},
		{"exists only for a benchmark", "slots/write.go", "package slots", false},
		{"declares a test double", "watchdog/x.go", "package watchdog\ntype FakeDevice struct{}", true},
		{"declares a test double", "watchdog/x.go", "package watchdog\n// MemJournal is a journal for tests.\ntype MemJournal struct{}", true},
		{"declares a test double", "watchdog/x.go", "package watchdog\n// LinuxDevice is the real one.\ntype LinuxDevice struct{}", false},
		{"declares a test double", "watchdog/x.go", "package watchdog\ntype fakeDevice struct{}", false},
	} {
		f, err := parser.ParseFile(token.NewFileSet(), tc.rel, tc.src, parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		pf := productFile{rel: tc.rel, dir: filepath.ToSlash(filepath.Dir(tc.rel)), file: f}
		i := checkNamed(tc.check)
		if i < 0 {
			t.Fatalf("no check %q", tc.check)
		}
		if got := productChecks[i].find(pf) != ""; got != tc.want {
			t.Errorf("%s on %s %q: found %v, want %v", tc.check, tc.rel, tc.src, got, tc.want)
		}
	}
}
