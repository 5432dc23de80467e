package repotest

import (
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	// This package's own test binary takes the flags too.
	_ "github.com/bootorbit/bootorbit/internal/testrand"
)

const testrandPath = "github.com/bootorbit/bootorbit/internal/testrand"

// TestEveryTestBinaryTakesSeedAndLong fails on a package with tests none of
// which imports internal/testrand: its test binary would reject -seed and
// -long, and go test ./... -args -long would fail there ("flag provided but
// not defined"). A package without randomized tests imports it blank, in a
// testflags_test.go.
func TestEveryTestBinaryTakesSeedAndLong(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			return nil
		}
		name := d.Name()
		if path != root && (strings.HasPrefix(name, ".") || strings.HasPrefix(name, "_") || name == "testdata") {
			return filepath.SkipDir
		}
		rel, _ := filepath.Rel(root, path)
		if filepath.ToSlash(rel) == "internal/testrand" {
			return nil // defines the flags
		}
		pkgs, err := parser.ParseDir(token.NewFileSet(), path, func(fi fs.FileInfo) bool {
			return strings.HasSuffix(fi.Name(), "_test.go")
		}, parser.ImportsOnly)
		if err != nil {
			return err
		}
		if len(pkgs) == 0 {
			return nil
		}
		checked++
		for _, p := range pkgs {
			for _, f := range p.Files {
				for _, imp := range f.Imports {
					if v, _ := strconv.Unquote(imp.Path.Value); v == testrandPath {
						return nil
					}
				}
			}
		}
		t.Errorf("%s: no test file imports internal/testrand, so its test binary rejects -seed and -long: add a testflags_test.go with import _ %q", rel, testrandPath)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if checked < 10 {
		t.Fatalf("only %d packages with tests found: is the walk rooted at the module?", checked)
	}
}
