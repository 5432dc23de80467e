package vm

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ErrModule prefixes errors about kernel modules.
var ErrModule = errors.New("vm: kernel module")

// Module is a kernel module file to load in the guest.
type Module struct {
	Name string // canonical name: file name without .ko, '-' as '_'
	Path string // path of the .ko on the host
}

// maxModuleInfo bounds the .modinfo section read from a module.
const maxModuleInfo = 1 << 20

// moduleName is the kernel's canonical module name of a file name.
func moduleName(file string) string {
	base := filepath.Base(file)
	for _, suf := range []string{".ko.xz", ".ko.zst", ".ko.gz", ".ko"} {
		if strings.HasSuffix(base, suf) {
			base = strings.TrimSuffix(base, suf)
			break
		}
	}
	return strings.ReplaceAll(base, "-", "_")
}

// indexModules maps the canonical name of every module file under dir to
// its path. A kernel packaged without modules.dep (Debian's .deb: depmod
// runs at install) is read this way.
func indexModules(dir string) (map[string]string, error) {
	idx := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() && strings.Contains(d.Name(), ".ko") {
			idx[moduleName(p)] = p
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("%w: index %s: %w", ErrModule, dir, err)
	}
	return idx, nil
}

// moduleDepends reads the "depends=" entry of a module's .modinfo section.
func moduleDepends(path string) ([]string, error) {
	if !strings.HasSuffix(path, ".ko") {
		// Debian bookworm's arm64 kernel ships uncompressed modules
		// (CONFIG_MODULE_COMPRESS_NONE); a compressed one would need
		// decompressing before finit_module, which this bench does not do.
		return nil, fmt.Errorf("%w: %s is compressed; only uncompressed .ko files are supported", ErrModule, path)
	}
	f, err := elf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrModule, path, err)
	}
	defer f.Close()
	sec := f.Section(".modinfo")
	if sec == nil {
		return nil, fmt.Errorf("%w: %s has no .modinfo section", ErrModule, path)
	}
	if sec.Size > maxModuleInfo {
		return nil, fmt.Errorf("%w: %s: .modinfo of %d bytes, limit %d", ErrModule, path, sec.Size, maxModuleInfo)
	}
	data, err := io.ReadAll(io.LimitReader(sec.Open(), maxModuleInfo))
	if err != nil {
		return nil, fmt.Errorf("%w: %s: .modinfo: %w", ErrModule, path, err)
	}
	var deps []string
	for _, kv := range bytes.Split(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(kv, []byte("depends=")); ok && len(v) > 0 {
			for _, d := range strings.Split(string(v), ",") {
				deps = append(deps, moduleName(d))
			}
		}
	}
	return deps, nil
}

// ResolveModules finds the named modules under modDir (a
// lib/modules/VERSION tree) and returns them with everything they depend
// on, dependencies first: the order to load them in. Names the kernel has
// built in (listed in modDir/modules.builtin) are skipped.
func ResolveModules(modDir string, names []string) ([]Module, error) {
	idx, err := indexModules(modDir)
	if err != nil {
		return nil, err
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(modDir, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[moduleName(l)] = true
		}
	}
	var out []Module
	state := map[string]int{} // 1 visiting, 2 done
	var visit func(name string, from []string) error
	visit = func(name string, from []string) error {
		name = moduleName(name)
		switch state[name] {
		case 1:
			return fmt.Errorf("%w: dependency cycle %s -> %s", ErrModule, strings.Join(from, " -> "), name)
		case 2:
			return nil
		}
		if builtin[name] {
			state[name] = 2
			return nil
		}
		p, ok := idx[name]
		if !ok {
			if len(from) > 0 {
				return fmt.Errorf("%w: %s (needed by %s) not found under %s", ErrModule, name, from[len(from)-1], modDir)
			}
			return fmt.Errorf("%w: %s not found under %s", ErrModule, name, modDir)
		}
		state[name] = 1
		deps, err := moduleDepends(p)
		if err != nil {
			return err
		}
		for _, d := range deps {
			if err := visit(d, append(from, name)); err != nil {
				return err
			}
		}
		state[name] = 2
		out = append(out, Module{Name: name, Path: p})
		return nil
	}
	for _, n := range names {
		if err := visit(n, nil); err != nil {
			return nil, err
		}
	}
	return out, nil
}
