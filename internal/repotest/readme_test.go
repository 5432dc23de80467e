package repotest

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/internal/testtool"
)

// A shell block of a document: the commands of one ```sh or ```console
// fence, in order.
type shellBlock struct {
	doc   string // file name, for messages
	line  int    // line of the opening fence
	cmds  []string
	needs []string // tools named by "# needs: TOOL..." lines
}

// The rule for which README commands TestReadmeCommands runs: every command
// of a block runs, in one bash process per block from the repository root,
// unless a command of the block matches one of readmeSkips, in which case
// the whole block is skipped (later commands may depend on earlier ones) and
// the reason logged. A block with a "# needs: TOOL..." line is skipped when
// a tool is missing, and fails instead under BOOTORBIT_REQUIRE_TOOLS=1.
// Output is not compared (help texts and reports change); exit statuses are:
// every command must exit 0.
var readmeSkips = []struct {
	re  *regexp.Regexp
	why string
}{
	{regexp.MustCompile(`^go test( -count=\d+)? \./\.\.\.`), "the whole test suite, which CI runs and which includes this test"},
	{regexp.MustCompile(`(^|\s)-bench[\s=]`), "a benchmark"},
	{regexp.MustCompile(`\bhil (bench|disk|vm)\b`), "a measurement campaign or bench hardware (root, FUSE, QEMU)"},
	{regexp.MustCompile(`\bhil (demo|run)\b`), "the demo and the scenarios, which hil/demo's TestDemo and hil/scenario's TestScenarios run"},
	{regexp.MustCompile(`^sudo\b`), "needs root"},
}

// placeholders are words that stand for something the reader must supply;
// a command shown in the docs must run as pasted, so none may appear.
// Shell variables ($PATH) and assignments (PATH=...) are not placeholders,
// and neither is what follows a comment.
var (
	placeholders = regexp.MustCompile(`\[--|<[a-z-]+>|\b(N|FILE|DIR|PATH|SLOT|TAG|REF|OUTDIR|LAYOUT|HEX|DEVICE)\b`)
	shellNames   = regexp.MustCompile(`\$\{?[A-Za-z_][A-Za-z0-9_]*\}?|\b[A-Za-z_][A-Za-z0-9_]*=`)
)

// placeholderIn returns the first placeholder in the command c, or "".
func placeholderIn(c string) string {
	if i := strings.Index(c, " #"); i >= 0 {
		c = c[:i]
	}
	return placeholders.FindString(shellNames.ReplaceAllString(c, ""))
}

// TestReadmeCommands runs the cheap commands of README.md's shell blocks
// (see readmeSkips for the rule) and fails on any that exits non-zero.
func TestReadmeCommands(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the README's commands build the binaries")
	}
	root := moduleRoot(t)
	blocks := shellBlocks(t, filepath.Join(root, "README.md"))
	if len(blocks) < 3 {
		t.Fatalf("README.md has %d shell blocks; the parser is broken or the README lost its commands", len(blocks))
	}
	goTool := goCommand(t)
	ran := 0
	for _, b := range blocks {
		t.Run(fmt.Sprintf("line%d", b.line), func(t *testing.T) {
			for _, c := range b.cmds {
				for _, s := range readmeSkips {
					if s.re.MatchString(c) {
						t.Skipf("skipped: %q is %s", c, s.why)
					}
				}
			}
			for _, tool := range b.needs {
				testtool.Need(t, tool)
			}
			ran++
			runBlock(t, root, goTool, b)
		})
	}
	if ran == 0 {
		t.Error("no README block ran: every one matched a skip rule")
	}
}

// runBlock runs b's commands in one bash process, stopping at the first
// that exits non-zero. Scratch directories (mktemp) go to the test's
// temporary directory, so that nothing is left behind.
func runBlock(t *testing.T, root, goTool string, b shellBlock) {
	t.Helper()
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skipf("no bash to run the README with: %v", err)
	}
	var script strings.Builder
	script.WriteString("set -o pipefail\n")
	for i, c := range b.cmds {
		// Each command on its own line (it may end in a comment), then a
		// check of its status: set -e would let a failure inside an &&
		// list pass.
		fmt.Fprintf(&script, "%s\nrc=$?; if [ $rc -ne 0 ]; then echo \"README command %d exited $rc: \"%q >&2; exit $rc; fi\n", c, i+1, c)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bash, "--noprofile", "--norc", "-c", script.String())
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "TMPDIR="+t.TempDir(), "PATH="+filepath.Dir(goTool)+string(os.PathListSeparator)+os.Getenv("PATH"))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("README.md block at line %d: %v\n%s", b.line, err, out)
	}
	t.Logf("README.md block at line %d: %d commands exited 0", b.line, len(b.cmds))
}

var fence = regexp.MustCompile("^(\\s*)```\\s*([A-Za-z]*)\\s*$")

// shellBlocks extracts the commands of every ```sh and ```console block of
// the Markdown file at path. In sh blocks every line is a command, with
// backslash continuations joined, and full-line comments dropped except
// "# needs: TOOL..."; in console blocks only lines starting with "$ " are
// commands, the rest being output.
func shellBlocks(t *testing.T, path string) []shellBlock {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var (
		blocks  []shellBlock
		cur     *shellBlock
		lang    string
		indent  string
		pending string // a command continued with a backslash
	)
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if m := fence.FindStringSubmatch(line); m != nil {
			if cur == nil {
				cur = &shellBlock{doc: filepath.Base(path), line: n}
				if m[2] != "sh" && m[2] != "console" {
					cur.line = -n // another language's block: skipped to its end
				}
				lang, indent, pending = m[2], m[1], ""
				continue
			}
			if cur.line > 0 {
				if pending != "" {
					t.Fatalf("%s:%d: block ends inside a continued command", path, n)
				}
				blocks = append(blocks, *cur)
			}
			cur = nil
			continue
		}
		if cur == nil || cur.line < 0 {
			continue
		}
		line = strings.TrimPrefix(line, indent)
		if lang == "console" && pending == "" {
			c, ok := strings.CutPrefix(line, "$ ")
			if !ok {
				continue // output
			}
			line = c
		}
		trimmed := strings.TrimSpace(line)
		if pending == "" {
			if trimmed == "" {
				continue
			}
			if strings.HasPrefix(trimmed, "#") {
				if tools, ok := strings.CutPrefix(trimmed, "# needs:"); ok {
					cur.needs = append(cur.needs, strings.Fields(tools)...)
				}
				continue
			}
		}
		if c, ok := strings.CutSuffix(line, "\\"); ok {
			pending += c
			continue
		}
		cur.cmds = append(cur.cmds, pending+line)
		pending = ""
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if cur != nil {
		t.Fatalf("%s: block at line %d is not closed", path, cur.line)
	}
	return blocks
}

// TestDocCommandsHaveNoPlaceholders checks every shell block of README.md
// and docs/*.md: a command shown must run as pasted, so it may not hold a
// placeholder (N, FILE, DIR, [--optional], <name>, ...). The rule ignores
// what follows a "#" comment.
func TestDocCommandsHaveNoPlaceholders(t *testing.T) {
	root := moduleRoot(t)
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	docs = append(docs, filepath.Join(root, "README.md"))
	for _, doc := range docs {
		for _, b := range shellBlocks(t, doc) {
			for _, c := range b.cmds {
				if m := placeholderIn(c); m != "" {
					t.Errorf("%s, block at line %d: %q holds the placeholder %q: show a command that runs as pasted", b.doc, b.line, c, m)
				}
			}
		}
	}
}

// The extraction itself: continuations, comments, needs, console output.
func TestShellBlocks(t *testing.T) {
	md := "text\n" +
		"```sh\n" +
		"# needs: umoci zstd\n" +
		"# a comment\n" +
		"go build \\\n" +
		"   ./cmd/...   # trailing comment kept\n" +
		"\n" +
		"echo hi\n" +
		"```\n" +
		"```go\n" +
		"package main\n" +
		"```\n" +
		"   ```console\n" +
		"   $ flightd --help\n" +
		"   usage: flightd ...\n" +
		"   ```\n"
	p := filepath.Join(t.TempDir(), "x.md")
	if err := os.WriteFile(p, []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	got := shellBlocks(t, p)
	if len(got) != 2 {
		t.Fatalf("%d blocks: %+v", len(got), got)
	}
	if want := []string{"go build    ./cmd/...   # trailing comment kept", "echo hi"}; strings.Join(got[0].cmds, "|") != strings.Join(want, "|") {
		t.Errorf("sh block commands %q, want %q", got[0].cmds, want)
	}
	if strings.Join(got[0].needs, ",") != "umoci,zstd" {
		t.Errorf("needs %q", got[0].needs)
	}
	if len(got[1].cmds) != 1 || got[1].cmds[0] != "flightd --help" {
		t.Errorf("console block commands %q", got[1].cmds)
	}
	for _, tc := range []struct {
		cmd  string
		skip bool
	}{
		{"go test ./...", true},
		{"go test -count=1 ./...", true},
		{"go test -run '^$' -bench BenchmarkTransfer ./protocol/transfer/", true},
		{"go run ./cmd/hil bench slot-write --size 64MiB", true},
		{"sudo delta/bench/mkimages.sh testdata-gen", true},
		{"go test -count=1 -run TestProfiles -v ./protocol/transfer/", false},
		{"go run ./cmd/hil --help", false},
		{"flightd update install B rootfs.img --raw", false},
	} {
		skip := false
		for _, s := range readmeSkips {
			skip = skip || s.re.MatchString(tc.cmd)
		}
		if skip != tc.skip {
			t.Errorf("%q: skipped %v, want %v", tc.cmd, skip, tc.skip)
		}
	}
	for _, c := range []string{"hil bench delta --from TAG", "go test -args -seed=N", "groundd delta [--tmp x]", "flightd slot verify <slot>"} {
		if placeholderIn(c) == "" {
			t.Errorf("placeholder in %q not found", c)
		}
	}
	for _, c := range []string{
		`flightd update install B rootfs.img --raw --label v2 --state-dir state`,
		`export PATH="$demo/bin:$PATH" && echo ${PATH}`,
		`go test ./... # replays with -seed N`,
	} {
		if m := placeholderIn(c); m != "" {
			t.Errorf("%q flagged as holding the placeholder %q", c, m)
		}
	}
}
