package vm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
)

// ErrKernel prefixes errors about the guest kernel.
var ErrKernel = errors.New("vm: kernel")

// KernelDirEnv names the environment variable that points at an extracted
// kernel package (the directory fetch-kernel.sh writes).
const KernelDirEnv = "BOOTORBIT_VM_KERNEL_DIR"

// Kernel is an arm64 Linux kernel extracted from its distribution package
// (dpkg-deb -x): the image and its modules tree.
type Kernel struct {
	Version string // e.g. 6.1.0-56-arm64
	Image   string // boot/vmlinuz-VERSION (QEMU loads gzip-compressed arm64 Images)
	Modules string // lib/modules/VERSION
}

// FindKernel looks for boot/vmlinuz-* in dir, the root of an extracted
// linux-image package, and its matching lib/modules tree. With several
// versions it takes the greatest by name.
func FindKernel(dir string) (Kernel, error) {
	imgs, _ := filepath.Glob(filepath.Join(dir, "boot", "vmlinuz-*"))
	if len(imgs) == 0 {
		return Kernel{}, fmt.Errorf("%w: no boot/vmlinuz-* in %s (run hil/vm/fetch-kernel.sh %s)", ErrKernel, dir, dir)
	}
	sort.Strings(imgs)
	img := imgs[len(imgs)-1]
	k := Kernel{Version: strings.TrimPrefix(filepath.Base(img), "vmlinuz-"), Image: img}
	for _, m := range []string{"lib/modules", "usr/lib/modules"} {
		p := filepath.Join(dir, m, k.Version)
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			k.Modules = p
			return k, nil
		}
	}
	return Kernel{}, fmt.Errorf("%w: no lib/modules/%s in %s", ErrKernel, k.Version, dir)
}

// BuildGuestTest compiles the tests of package pkg (an import path of
// this module) into a static linux/arm64 test binary at out, to run in the
// guest.
func BuildGuestTest(ctx context.Context, pkg, out string) error {
	cmd := exec.CommandContext(ctx, "go", "test", "-c", "-trimpath", "-ldflags=-s -w", "-o", out, pkg)
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("vm: build guest test %s: %w: %s", pkg, err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// BuildGuestInit compiles the guest's /init (package hil/vm/guestinit) as
// a static linux/arm64 binary at out. It needs the Go toolchain and this
// module's source, so it runs from within the repository.
func BuildGuestInit(ctx context.Context, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", out,
		"github.com/bootorbit/bootorbit/hil/vm/guestinit")
	cmd.Env = append(os.Environ(), "GOOS=linux", "GOARCH=arm64", "CGO_ENABLED=0")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("vm: build guest init: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	return nil
}

// File is an extra regular file for the initramfs.
type File struct {
	Name string // path inside the initramfs, without the leading /
	Perm uint32
	Data []byte
}

// BuildInitramfs writes an uncompressed newc initramfs to path: the init
// binary as /init, /dev/console, the mount points the init uses, the
// modules under /modules with /modules/order giving the load order, and
// any extra files (in the root directory or in one the archive has).
func BuildInitramfs(path string, init []byte, mods []Module, extra ...File) (err error) {
	f, err := os.Create(path)
	if err != nil {
		return fmt.Errorf("vm: initramfs: %w", err)
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("vm: initramfs: %w", cerr)
		}
		if err != nil {
			os.Remove(path)
		}
	}()
	w := NewCPIOWriter(f)
	for _, d := range []string{"dev", "proc", "sys", "state", "modules"} {
		w.Dir(d, 0o755)
	}
	w.CharDev("dev/console", 0o600, 5, 1)
	var order strings.Builder
	for _, m := range mods {
		data, err := os.ReadFile(m.Path)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrModule, err)
		}
		w.File("modules/"+m.Name+".ko", 0o644, data)
		order.WriteString(m.Name + "\n")
	}
	w.File("modules/order", 0o644, []byte(order.String()))
	w.File("init", 0o755, init)
	for _, f := range extra {
		w.File(f.Name, f.Perm, f.Data)
	}
	return w.Close()
}
