package board

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
)

// Build builds flightd for linux/arch into dir with the go command (the
// bench runs from the repository) and returns the binary and the emulator
// that runs it here: none for the host's architecture or when binfmt_misc
// runs the architecture already, else qemu-user (qemu-aarch64-static or
// qemu-aarch64, called explicitly).
func Build(ctx context.Context, dir, arch string) (bin string, emulator []string, err error) {
	if arch == "" {
		arch = runtime.GOARCH
	}
	bin = filepath.Join(dir, "flightd-"+arch)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "github.com/bootorbit/bootorbit/cmd/flightd")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH="+arch, "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", nil, fmt.Errorf("board: go build flightd for %s: %v\n%s", arch, err, out)
	}
	if arch == runtime.GOARCH {
		return bin, nil, nil
	}
	emulator, err = Emulator(arch)
	return bin, emulator, err
}

// Emulator returns how to run a linux/arch binary here: nil when
// binfmt_misc has qemu registered for it, else the qemu-user binary.
func Emulator(arch string) ([]string, error) {
	qarch := map[string]string{"arm64": "aarch64", "arm": "arm", "riscv64": "riscv64"}[arch]
	if qarch == "" {
		return nil, fmt.Errorf("board: no qemu-user for %s", arch)
	}
	if b, err := os.ReadFile("/proc/sys/fs/binfmt_misc/qemu-" + qarch); err == nil && len(b) > 0 && string(b[:7]) == "enabled" {
		return nil, nil
	}
	for _, name := range []string{"qemu-" + qarch + "-static", "qemu-" + qarch} {
		if p, err := exec.LookPath(name); err == nil {
			return []string{p}, nil
		}
	}
	return nil, fmt.Errorf("board: neither binfmt_misc nor qemu-%s-static can run %s binaries (apt-get install qemu-user-static)", qarch, arch)
}
