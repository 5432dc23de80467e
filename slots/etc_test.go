package slots

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// etcTree writes a small /etc from a spec: "path=content" for files,
// "path/" for directories, "path->target" for symlinks, and "path=content@0600"
// for a mode.
func etcTree(t *testing.T, dir string, spec ...string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, s := range spec {
		switch {
		case strings.HasSuffix(s, "/"):
			os.MkdirAll(filepath.Join(dir, s), 0o755)
		case strings.Contains(s, "->"):
			p, target, _ := strings.Cut(s, "->")
			os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
			if err := os.Symlink(target, filepath.Join(dir, p)); err != nil {
				t.Fatal(err)
			}
		default:
			p, content, _ := strings.Cut(s, "=")
			mode := os.FileMode(0o644)
			if c, m, ok := strings.Cut(content, "@"); ok {
				var v uint32
				fmt.Sscanf(m, "%o", &v)
				content, mode = c, os.FileMode(v)
			}
			os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755)
			if err := os.WriteFile(filepath.Join(dir, p), []byte(content), mode); err != nil {
				t.Fatal(err)
			}
			os.Chmod(filepath.Join(dir, p), mode)
		}
	}
}

func describeTree(t *testing.T, dir string) string {
	t.Helper()
	es, err := ReadTree(context.Background(), dir, ReadTreeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		switch e.Type {
		case 'd':
			out = append(out, e.Path+"/")
		case 'l':
			out = append(out, e.Path+"->"+e.Link)
		default:
			b, _ := os.ReadFile(filepath.Join(dir, e.Path))
			s := e.Path + "=" + string(b)
			if e.Mode != 0o644 {
				s += fmt.Sprintf("@%04o", e.Mode)
			}
			out = append(out, s)
		}
	}
	return strings.Join(out, " ")
}

func TestMergeEtcCases(t *testing.T) {
	for _, tc := range []struct {
		name           string
		old, cur, new  []string
		want           string
		kept, del, con string
	}{
		{name: "untouched follows the image", old: []string{"a=1"}, cur: []string{"a=1"}, new: []string{"a=2"}, want: "a=2"},
		{name: "image deletes an untouched file", old: []string{"a=1", "b=1"}, cur: []string{"a=1", "b=1"}, new: []string{"a=1"}, want: "a=1"},
		{name: "image adds a file", old: []string{}, cur: []string{}, new: []string{"n=1"}, want: "n=1"},
		{name: "local edit kept", old: []string{"a=1"}, cur: []string{"a=local"}, new: []string{"a=1"}, want: "a=local", kept: "[a]"},
		{name: "local chmod kept", old: []string{"a=1"}, cur: []string{"a=1@0600"}, new: []string{"a=1"}, want: "a=1@0600", kept: "[a]"},
		{name: "local addition kept", old: []string{}, cur: []string{"d/", "d/x=mine"}, new: []string{}, want: "d/ d/x=mine", kept: "[d d/x]"},
		{name: "local deletion stays", old: []string{"a=1", "b=1"}, cur: []string{"a=1"}, new: []string{"a=1", "b=1"}, want: "a=1", del: "[b]"},
		{name: "both changed alike", old: []string{"a=1"}, cur: []string{"a=2"}, new: []string{"a=2"}, want: "a=2"},
		{name: "conflict: local wins", old: []string{"a=1"}, cur: []string{"a=local"}, new: []string{"a=image"}, want: "a=local", con: "[a]"},
		{name: "conflict: deleted locally, changed by image", old: []string{"a=1"}, cur: []string{}, new: []string{"a=2"}, want: "", con: "[a]"},
		{name: "local dir deletion takes new image files", old: []string{"d/", "d/x=1"}, cur: []string{}, new: []string{"d/", "d/x=1", "d/new=1"}, want: "", del: "[d]"},
		{name: "local symlink retarget kept", old: []string{"l->a"}, cur: []string{"l->b"}, new: []string{"l->a"}, want: "l->b", kept: "[l]"},
		{name: "local file became dir", old: []string{"p=1"}, cur: []string{"p/", "p/q=2"}, new: []string{"p=1"}, want: "p/ p/q=2", kept: "[p p/q]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := t.TempDir()
			o, c, n := filepath.Join(base, "old"), filepath.Join(base, "cur"), filepath.Join(base, "new")
			etcTree(t, o, tc.old...)
			etcTree(t, c, tc.cur...)
			etcTree(t, n, tc.new...)
			rep, err := MergeEtc(context.Background(), o, c, n)
			if err != nil {
				t.Fatal(err)
			}
			if got := describeTree(t, n); got != tc.want {
				t.Errorf("merged /etc %q, want %q", got, tc.want)
			}
			str := func(s []string) string {
				if len(s) == 0 {
					return ""
				}
				return fmt.Sprint(s)
			}
			if str(rep.Kept) != tc.kept || str(rep.Deleted) != tc.del || str(rep.Conflicts) != tc.con {
				t.Errorf("report kept %v deleted %v conflicts %v", rep.Kept, rep.Deleted, rep.Conflicts)
			}
		})
	}
}

// TestMergeEtcSymlinkedParent: the new image made a directory a symlink;
// a local change below it is not written through the link.
func TestMergeEtcSymlinkedParent(t *testing.T) {
	base := t.TempDir()
	o, c, n, outside := filepath.Join(base, "old"), filepath.Join(base, "cur"), filepath.Join(base, "new"), filepath.Join(base, "outside")
	etcTree(t, o, "d/", "d/f=1")
	etcTree(t, c, "d/", "d/f=local")
	etcTree(t, n, "d->"+outside)
	os.Mkdir(outside, 0o755)
	rep, err := MergeEtc(context.Background(), o, c, n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(outside, "f")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("merge wrote through a symlink")
	}
	if len(rep.Conflicts) != 0 || fmt.Sprint(rep.Skipped) != "[d/f]" {
		t.Fatalf("report %+v", rep)
	}
}
