package deltabench

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Why a shim: Go starts children with clone(CLONE_VM|CLONE_VFORK), and at
// exec Linux folds the high-water RSS of the mm being replaced (the
// parent's, shared until then) into the child's ru_maxrss. A child of a
// large bench process would report at least the bench's own peak. The shim
// is a fresh, small process that starts the measured command and reports
// that command's rusage; its own few MiB are the floor of the measurement.

// ShimMain runs "--rss-out FILE -- ARGV...": it runs ARGV with the shim's
// stdin, stdout and stderr, writes "maxrss_kib N cpu_ns N" (peak RSS, user
// plus system CPU time) to FILE, and returns the
// command's exit status (or 127 when it cannot be started).
func ShimMain(args []string, stderr io.Writer) int {
	if len(args) < 4 || args[0] != "--rss-out" || args[2] != "--" {
		fmt.Fprintln(stderr, "usage: --rss-out FILE -- COMMAND [ARGS...]")
		return 2
	}
	out, argv := args[1], args[3:]
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
		if code < 0 {
			code = 128
		}
	case err != nil:
		fmt.Fprintln(stderr, err)
		return 127
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		cpu := ru.Utime.Nano() + ru.Stime.Nano()
		if err := os.WriteFile(out, []byte(fmt.Sprintf("maxrss_kib %d cpu_ns %d\n", ru.Maxrss, cpu)), 0o644); err != nil {
			fmt.Fprintln(stderr, err)
			return 127
		}
	}
	return code
}

func readShim(path string) (rss int64, cpu time.Duration, err error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, 0, fmt.Errorf("bench: shim wrote no rusage: %w", err)
	}
	f := strings.Fields(string(b))
	if len(f) != 4 || f[0] != "maxrss_kib" || f[2] != "cpu_ns" {
		return 0, 0, fmt.Errorf("bench: shim rusage %q", b)
	}
	kib, err1 := strconv.ParseInt(f[1], 10, 64)
	ns, err2 := strconv.ParseInt(f[3], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("bench: shim rusage %q", b)
	}
	return kib * 1024, time.Duration(ns), nil
}
