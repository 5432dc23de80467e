// Package slotstest holds test helpers for the slots package and for
// those that test and measure slot writes (hil/disk, hil/slotbench): a
// deterministic root filesystem generator. It does not import slots, so
// that slots' own internal tests can use it.
package slotstest

import (
	"archive/tar"
	"bytes"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"time"
)

// GenerateRootfs returns a deterministic root filesystem layer tar of about
// size content bytes: directories of files of mixed sizes (mostly small, a
// few large, as in a real distribution), with symlinks and hard links, and
// incompressible content. It also returns the number of regular files.
func GenerateRootfs(seed uint64, size int64) ([]byte, int, error) {
	r := rand.New(rand.NewPCG(seed, 0x5eed))
	var key [32]byte
	for i := range key {
		key[i] = byte(r.IntN(256))
	}
	content := rand.NewChaCha8(key)
	var buf bytes.Buffer
	buf.Grow(int(size + size/8 + 1<<20))
	w := tar.NewWriter(&buf)
	mt := time.Unix(1700000000, 0)
	hdr := func(h *tar.Header) error {
		h.ModTime, h.Format = mt, tar.FormatPAX
		return w.WriteHeader(h)
	}
	for _, d := range []string{"usr", "usr/lib", "usr/bin", "etc", "var"} {
		if err := hdr(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
			return nil, 0, err
		}
	}
	var total int64
	files, dirN := 0, 0
	dir := ""
	chunk := make([]byte, 1<<20)
	for total < size {
		if files%64 == 0 {
			dir = fmt.Sprintf("usr/lib/pkg%04d", dirN)
			dirN++
			if err := hdr(&tar.Header{Name: dir + "/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
				return nil, 0, err
			}
		}
		var n int64
		// Sizes shaped like a distribution's root filesystem: mostly small
		// files (mean about 75 KiB, so about 2700 files for 200 MiB).
		switch p := r.IntN(1000); {
		case p < 750:
			n = 100 + r.Int64N(8<<10)
		case p < 950:
			n = 8<<10 + r.Int64N(56<<10)
		case p < 995:
			n = 64<<10 + r.Int64N(960<<10)
		default:
			n = 1<<20 + r.Int64N(15<<20)
		}
		n = min(n, size-total)
		name := fmt.Sprintf("%s/f%05d", dir, files)
		if err := hdr(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: 0o644, Size: n}); err != nil {
			return nil, 0, err
		}
		for left := n; left > 0; {
			c := chunk[:min(int64(len(chunk)), left)]
			content.Read(c)
			w.Write(c)
			left -= int64(len(c))
		}
		total += n
		files++
		if files%20 == 0 {
			if err := hdr(&tar.Header{Name: name + ".lnk", Typeflag: tar.TypeSymlink, Linkname: filepath.Base(name), Mode: 0o777}); err != nil {
				return nil, 0, err
			}
		}
		if files%50 == 0 {
			if err := hdr(&tar.Header{Name: name + ".hard", Typeflag: tar.TypeLink, Linkname: name}); err != nil {
				return nil, 0, err
			}
		}
	}
	if err := w.Close(); err != nil {
		return nil, 0, err
	}
	return buf.Bytes(), files, nil
}
