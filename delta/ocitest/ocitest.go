// Package ocitest builds small synthetic OCI image layouts for tests: layers
// described in Go (files, directories, symlinks, hard links, whiteouts;
// uncompressed, gzip or zstd), written with package oci's Writer, and seeded
// generators of random images and of "updated" versions of them (files
// edited, moved between layers, renamed, deleted, an upgrade layer on top),
// fast enough for property tests over hundreds of pairs.
package ocitest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"fmt"
	"path"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// EntryType is the kind of a layer entry.
type EntryType int

const (
	File EntryType = iota
	Dir
	Symlink
	Hardlink
	Whiteout       // deletes Name from lower layers (tar entry dir/.wh.base)
	OpaqueWhiteout // hides everything under directory Name in lower layers
)

func (t EntryType) String() string {
	return [...]string{"file", "dir", "symlink", "hardlink", "whiteout", "opaque"}[t]
}

// Entry is one entry of a layer. Zero Mode and ModTime take defaults (0644
// files, 0755 directories, 0777 symlinks; Epoch).
type Entry struct {
	Type     EntryType
	Name     string // relative path, no leading "/"
	Data     []byte // File content
	Link     string // Symlink target, or Hardlink target (an earlier entry's Name)
	Mode     int64
	ModTime  time.Time
	UID, GID int
}

// Layer is one layer: its entries in tar order, and how its blob is
// compressed.
type Layer struct {
	Entries     []Entry
	Compression oci.Compression
}

// Epoch is the default modification time of entries.
var Epoch = time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC)

// Image is what Write built.
type Image struct {
	Ref            oci.Ref // oci:DIR:TAG
	ManifestDigest digest.Digest
	DiffIDs        []digest.Digest
	Tars           [][]byte // each layer's uncompressed tar
	Layers         []Layer  // as given
}

// Tar returns the uncompressed tar of entries. The same entries always give
// the same bytes.
func Tar(entries []Entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.Name, Mode: e.Mode, ModTime: e.ModTime, Uid: e.UID, Gid: e.GID, Format: tar.FormatPAX}
		if h.ModTime.IsZero() {
			h.ModTime = Epoch
		}
		switch e.Type {
		case File:
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.Data))
			if h.Mode == 0 {
				h.Mode = 0o644
			}
		case Dir:
			h.Typeflag = tar.TypeDir
			h.Name = strings.TrimSuffix(e.Name, "/") + "/"
			if h.Mode == 0 {
				h.Mode = 0o755
			}
		case Symlink:
			h.Typeflag = tar.TypeSymlink
			h.Linkname = e.Link
			if h.Mode == 0 {
				h.Mode = 0o777
			}
		case Hardlink:
			h.Typeflag = tar.TypeLink
			h.Linkname = e.Link
			if h.Mode == 0 {
				h.Mode = 0o644
			}
		case Whiteout:
			h.Typeflag = tar.TypeReg
			h.Name = path.Join(path.Dir(e.Name), ".wh."+path.Base(e.Name))
			h.Mode = 0o644
		case OpaqueWhiteout:
			h.Typeflag = tar.TypeReg
			h.Name = path.Join(e.Name, ".wh..wh..opq")
			h.Mode = 0o644
		default:
			return nil, fmt.Errorf("ocitest: entry %q: unknown type %d", e.Name, e.Type)
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("ocitest: entry %q: %w", e.Name, err)
		}
		if e.Type == File {
			if _, err := tw.Write(e.Data); err != nil {
				return nil, fmt.Errorf("ocitest: entry %q: %w", e.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Compress compresses b as c would store it (gzip and zstd at their fastest
// levels; the point is the format, not the ratio).
func Compress(c oci.Compression, b []byte) ([]byte, error) {
	switch c {
	case oci.Uncompressed:
		return b, nil
	case oci.Gzip:
		var buf bytes.Buffer
		zw, _ := gzip.NewWriterLevel(&buf, gzip.BestSpeed)
		zw.Write(b)
		if err := zw.Close(); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	case oci.Zstd:
		enc, err := zstd.NewWriter(nil, zstd.WithEncoderLevel(zstd.SpeedFastest), zstd.WithEncoderConcurrency(1))
		if err != nil {
			return nil, err
		}
		return enc.EncodeAll(b, nil), nil
	}
	return nil, fmt.Errorf("ocitest: unknown compression %v", c)
}

// MediaType returns the OCI layer media type for c.
func MediaType(c oci.Compression) string {
	switch c {
	case oci.Gzip:
		return oci.MediaTypeOCILayerGzip
	case oci.Zstd:
		return oci.MediaTypeOCILayerZstd
	}
	return oci.MediaTypeOCILayer
}

// Write builds an image of layers into the layout at dir (created if
// needed; other tags in it are kept) under tag. It does not fsync (see
// oci.CreateScratch): test layouts need speed, not durability.
func Write(dir, tag string, layers []Layer) (Image, error) {
	w, err := oci.CreateScratch(dir) // test data: no fsync, for speed
	if err != nil {
		return Image{}, err
	}
	im := Image{Ref: oci.Ref{Layout: dir, Tag: tag}, Layers: layers}
	var descs []oci.Descriptor
	for i, l := range layers {
		t, err := Tar(l.Entries)
		if err != nil {
			return Image{}, fmt.Errorf("layer %d: %w", i, err)
		}
		blob, err := Compress(l.Compression, t)
		if err != nil {
			return Image{}, fmt.Errorf("layer %d: %w", i, err)
		}
		d, err := w.WriteBlobBytes(MediaType(l.Compression), blob)
		if err != nil {
			return Image{}, fmt.Errorf("layer %d: %w", i, err)
		}
		descs = append(descs, d)
		im.Tars = append(im.Tars, t)
		im.DiffIDs = append(im.DiffIDs, digest.FromBytes(t))
	}
	md, err := w.Commit(tag, oci.NewConfig(oci.DefaultPlatform(), im.DiffIDs), descs, nil)
	if err != nil {
		return Image{}, err
	}
	im.ManifestDigest = md.Digest
	return im, nil
}

// Build is Write for tests: it fails t on error.
func Build(t testing.TB, dir, tag string, layers []Layer) Image {
	t.Helper()
	im, err := Write(dir, tag, layers)
	if err != nil {
		t.Fatalf("ocitest.Build %s:%s: %v", dir, tag, err)
	}
	return im
}

// Flatten returns the files an image presents (later layers over earlier,
// whiteouts applied), by path: what a vehicle's unpacked root holds.
// Hard links resolve to their target's entry.
func Flatten(layers []Layer) map[string]Entry {
	fs := map[string]Entry{}
	for _, l := range layers {
		for _, e := range l.Entries {
			switch e.Type {
			case Whiteout:
				for p := range fs {
					if p == e.Name || strings.HasPrefix(p, e.Name+"/") {
						delete(fs, p)
					}
				}
			case OpaqueWhiteout:
				for p := range fs {
					if strings.HasPrefix(p, e.Name+"/") {
						delete(fs, p)
					}
				}
			case Hardlink:
				if t, ok := fs[e.Link]; ok {
					t.Name = e.Name
					fs[e.Name] = t
				}
			default:
				fs[e.Name] = e
			}
		}
	}
	return fs
}

// Names returns the sorted keys of a Flatten result.
func Names(fs map[string]Entry) []string {
	out := make([]string, 0, len(fs))
	for p := range fs {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}
