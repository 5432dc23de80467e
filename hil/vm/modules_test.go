package vm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// writeKO writes a minimal ELF64 relocatable file whose .modinfo section
// holds modinfo (NUL-separated key=value strings), like a kernel module.
func writeKO(t *testing.T, path, modinfo string) {
	t.Helper()
	shstr := "\x00.modinfo\x00.shstrtab\x00"
	const ehsize, shentsize = 64, 64
	infoOff := ehsize
	strOff := infoOff + len(modinfo)
	shOff := (strOff + len(shstr) + 7) &^ 7
	var b bytes.Buffer
	le := binary.LittleEndian
	w := func(v any) { binary.Write(&b, le, v) }
	b.Write([]byte{0x7f, 'E', 'L', 'F', 2, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0})
	w(uint16(1))   // ET_REL
	w(uint16(183)) // EM_AARCH64
	w(uint32(1))
	w(uint64(0)) // entry
	w(uint64(0)) // phoff
	w(uint64(shOff))
	w(uint32(0))
	w(uint16(ehsize))
	w(uint16(0)) // phentsize
	w(uint16(0)) // phnum
	w(uint16(shentsize))
	w(uint16(3)) // shnum
	w(uint16(2)) // shstrndx
	b.WriteString(modinfo)
	b.WriteString(shstr)
	for b.Len() < shOff {
		b.WriteByte(0)
	}
	sh := func(name, typ uint32, off, size int) {
		w(name)
		w(typ)
		w(uint64(0)) // flags
		w(uint64(0)) // addr
		w(uint64(off))
		w(uint64(size))
		w(uint32(0)) // link
		w(uint32(0)) // info
		w(uint64(1)) // addralign
		w(uint64(0)) // entsize
	}
	sh(0, 0, 0, 0)
	sh(1, 1, infoOff, len(modinfo))                                      // .modinfo, PROGBITS
	sh(uint32(strings.Index(shstr, ".shstrtab")), 3, strOff, len(shstr)) // STRTAB
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestResolveModulesOrdersDependenciesFirst(t *testing.T) {
	dir := t.TempDir()
	writeKO(t, filepath.Join(dir, "kernel/drivers/virtio/virtio_pci.ko"), "license=GPL\x00depends=virtio_pci_modern_dev,virtio-pci-legacy-dev\x00")
	writeKO(t, filepath.Join(dir, "kernel/drivers/virtio/virtio_pci_modern_dev.ko"), "depends=\x00")
	writeKO(t, filepath.Join(dir, "kernel/drivers/virtio/virtio_pci_legacy_dev.ko"), "depends=\x00")
	writeKO(t, filepath.Join(dir, "kernel/fs/ext4/ext4.ko"), "depends=jbd2,crc16\x00")
	writeKO(t, filepath.Join(dir, "kernel/fs/jbd2/jbd2.ko"), "depends=crc16\x00")
	writeKO(t, filepath.Join(dir, "kernel/lib/crc16.ko"), "")
	writeKO(t, filepath.Join(dir, "kernel/drivers/watchdog/i6300esb.ko"), "depends=\x00")
	os.WriteFile(filepath.Join(dir, "modules.builtin"), []byte("kernel/drivers/virtio/virtio.ko\n"), 0o644)
	writeKO(t, filepath.Join(dir, "kernel/drivers/virtio/virtio.ko"), "") // built in: skipped

	got, err := ResolveModules(dir, []string{"i6300esb", "virtio-pci", "ext4", "jbd2", "virtio"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"i6300esb", "virtio_pci_modern_dev", "virtio_pci_legacy_dev", "virtio_pci", "crc16", "jbd2", "ext4"}
	if names := moduleNames(got); !slices.Equal(names, want) {
		t.Errorf("load order %v, want %v", names, want)
	}
}

func TestResolveModulesErrors(t *testing.T) {
	dir := t.TempDir()
	writeKO(t, filepath.Join(dir, "a.ko"), "depends=b\x00")
	writeKO(t, filepath.Join(dir, "b.ko"), "depends=a\x00")
	writeKO(t, filepath.Join(dir, "c.ko"), "depends=missing\x00")
	os.WriteFile(filepath.Join(dir, "d.ko.xz"), []byte("\xfd7zXZ\x00"), 0o644)
	os.WriteFile(filepath.Join(dir, "e.ko"), []byte("not an ELF file"), 0o644)
	for name, want := range map[string]string{
		"a":       "dependency cycle a -> b -> a",
		"c":       "missing (needed by c) not found",
		"nothere": "nothere not found",
		"d":       "compressed",
		"e":       "e.ko",
	} {
		_, err := ResolveModules(dir, []string{name})
		if !errors.Is(err, ErrModule) || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want ErrModule with %q", name, err, want)
		}
	}
}
