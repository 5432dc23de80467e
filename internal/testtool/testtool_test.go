package testtool

import (
	"testing"
)

// recorder captures how a helper ended the test instead of ending it.
type recorder struct {
	testing.TB
	failed, skipped bool
}

func (r *recorder) Helper()                      {}
func (r *recorder) Fatalf(string, ...any)        { r.failed = true }
func (r *recorder) Skip(...any)                  { r.skipped = true }
func (r *recorder) Skipf(string, ...any)         { r.skipped = true }
func (r *recorder) Logf(format string, a ...any) {}

func TestNeed(t *testing.T) {
	const absent = "bootorbit-no-such-tool"
	for _, require := range []string{"", "1"} {
		t.Setenv(RequireTools, require)
		r := &recorder{TB: t}
		Need(r, absent)
		if want := require == "1"; r.failed != want || r.skipped == want {
			t.Errorf("%s=%q: failed=%v skipped=%v", RequireTools, require, r.failed, r.skipped)
		}
	}
	r := &recorder{TB: t}
	if p := Need(r, "sh"); p == "" || r.failed || r.skipped {
		t.Errorf("sh: path %q failed=%v skipped=%v", p, r.failed, r.skipped)
	}
}
