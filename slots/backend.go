package slots

import (
	"context"
	"encoding/hex"
	"fmt"
	"slices"

	"github.com/opencontainers/go-digest"
)

// backend is one kind of slot storage. Manager owns the slot state and
// records it around these calls (writing before write, written after it
// returns, bad on a mismatch); a backend only does the I/O and says what
// it found. A formatted directory slot is a directory slot whose Manager
// formats the device between recording writing and write (see
// format_linux.go).
type backend interface {
	// checkImage refuses an image whose shape the backend cannot take,
	// before anything changes.
	checkImage(img Image) error
	// write writes img into the slot, syncs it and reads it back from the
	// medium: the state to record (Written, with the digests), the
	// counts and times in res, or a *mismatch when the read-back differs
	// from what was expected. It records the layer index into idx as the
	// layers pass (nil: none).
	write(ctx context.Context, img Image, res *InstallResult, idx *indexWriter) (SlotInfo, error)
	// readBack reads an installed slot back from the medium for Verify:
	// the digest recorded at install that it is compared with, and the
	// one read now.
	readBack(ctx context.Context, info SlotInfo) (expected, actual string, err error)
}

// Optional backend methods, found by type assertion.
type (
	// emptier empties a slot ahead of an install (Manager.Prepare), so
	// that deleting the old content overlaps the download of the next.
	emptier interface {
		empty(ctx context.Context) error
	}
	// localState is kept beside a slot's content (a directory slot's
	// pristine /etc) and is dropped when the slot is recorded writing: its
	// content is no longer the image the state was taken from.
	localState interface{ dropLocalState() error }
)

// mismatch is a read-back that differs from the expected content: the
// slot becomes bad, with reason.
type mismatch struct{ reason string }

func (e *mismatch) Error() string { return "slots: read-back mismatch: " + e.reason }

// backend returns slot id's backend.
func (m *Manager) backend(id SlotID) backend {
	sl := m.slot(id)
	if sl.Backend == BackendRaw {
		return &rawSlot{sl: sl, m: m, id: id}
	}
	return &dirSlot{sl: sl, m: m, id: id}
}

// rawSlot is a block device or a preallocated file that takes a
// filesystem image, written from offset 0.
type rawSlot struct {
	sl Slot
	m  *Manager
	id SlotID
}

func (b *rawSlot) checkImage(img Image) error {
	if len(img.Layers) != 1 {
		return fmt.Errorf("%w: a raw slot takes exactly one layer (the filesystem image, or a tar holding it), got %d", ErrImageShape, len(img.Layers))
	}
	return nil
}

func (b *rawSlot) write(ctx context.Context, img Image, res *InstallResult, idx *indexWriter) (SlotInfo, error) {
	m := b.m
	start := m.o.Now()
	// Hash on the way only when nothing else says what was written.
	expected := img.Digest
	n, sum, err := b.writeImage(ctx, img, expected == "", idx)
	if err != nil {
		return SlotInfo{}, err
	}
	if idx != nil && img.RawStream {
		// The layer is the filesystem image: all of it is on the device.
		d := digest.Digest(img.Digest)
		if len(img.DiffIDs) > 0 {
			d = img.DiffIDs[0]
		} else if d == "" {
			d = digest.NewDigestFromBytes(digest.SHA256, sum[:])
		}
		idx.addWhole(d, n)
	}
	res.WriteTime += m.o.Now().Sub(start)
	if expected == "" {
		expected = "sha256:" + hex.EncodeToString(sum[:])
	}
	start = m.o.Now()
	got, err := HashRaw(ctx, m.o.FS, b.sl.Path, n)
	if err != nil {
		return SlotInfo{}, err
	}
	res.Bytes, res.Digest = n, "sha256:"+hex.EncodeToString(got[:])
	res.VerifyTime = m.o.Now().Sub(start)
	if res.Digest != expected {
		return SlotInfo{}, &mismatch{fmt.Sprintf("raw read-back %s, expected %s", res.Digest, expected)}
	}
	return SlotInfo{State: Written, Image: img.Label, Digest: res.Digest, Size: n}, nil
}

func (b *rawSlot) readBack(ctx context.Context, info SlotInfo) (string, string, error) {
	if info.Digest == "" {
		return "", "", fmt.Errorf("%w: slot %s has no recorded digest", ErrVerify, b.id)
	}
	sum, err := HashRaw(ctx, b.m.o.FS, b.sl.Path, info.Size)
	if err != nil {
		return "", "", err
	}
	return info.Digest, "sha256:" + hex.EncodeToString(sum[:]), nil
}

// dirSlot is a mounted filesystem that the image's layers are extracted
// into; its /etc carries local changes across installs and its pristine
// /etc is kept in the state directory.
type dirSlot struct {
	sl Slot
	m  *Manager
	id SlotID
}

func (b *dirSlot) checkImage(img Image) error {
	if img.RawStream {
		return fmt.Errorf("%w: a directory slot takes layer tars, not a raw filesystem image", ErrImageShape)
	}
	return nil
}

func (b *dirSlot) write(ctx context.Context, img Image, res *InstallResult, idx *indexWriter) (SlotInfo, error) {
	m := b.m
	start := m.o.Now()
	want := img.Tree
	eo := m.o.Extract
	eo.Hash = want == nil && img.Digest == ""
	eo.DeclaredSize = img.Size
	er, err := extractLayers(ctx, b.sl.Path, img.Layers, eo, idx)
	if err != nil {
		return SlotInfo{}, err
	}
	res.WriteTime += m.o.Now().Sub(start)
	start = m.o.Now()
	res.Bytes, res.Files = er.Bytes, er.Files
	if eo.Hash {
		want = er.Entries
	}
	got, err := ReadTree(ctx, b.sl.Path, ReadTreeOptions{DropCache: m.o.Extract.Sync != SyncNone})
	if err != nil {
		return SlotInfo{}, err
	}
	res.Digest = TreeDigest(got, DigestOptions{})
	res.StaticDigest = TreeDigest(got, DigestOptions{Exclude: MutableTrees})
	if want != nil {
		if d := DiffEntries(want, got, DigestOptions{}); d != "" {
			return SlotInfo{}, &mismatch{"read-back differs: " + d}
		}
	} else if res.Digest != img.Digest {
		return SlotInfo{}, &mismatch{fmt.Sprintf("read-back tree digest %s, image says %s: %s", res.Digest, img.Digest, shapeDiff(er.Entries, got))}
	}
	info := SlotInfo{State: Written, Image: img.Label, Digest: res.Digest, StaticDigest: res.StaticDigest}
	if err := m.carryEtc(ctx, b.id, res); err != nil {
		return SlotInfo{}, err
	}
	res.VerifyTime = m.o.Now().Sub(start)
	return info, nil
}

func (b *dirSlot) readBack(ctx context.Context, info SlotInfo) (string, string, error) {
	if info.StaticDigest == "" {
		return "", "", fmt.Errorf("%w: slot %s has no recorded digest", ErrVerify, b.id)
	}
	if b.sl.Format != "" {
		// Unmounted, the path is an empty directory: that is not what
		// the slot holds.
		ok, err := b.sl.mountedOn()
		if err != nil {
			return "", "", err
		}
		if !ok {
			return "", "", b.sl.deviceErr(ErrSlotDevice, "the device is not mounted on the slot path: mount it to verify the slot")
		}
	}
	es, err := ReadTree(ctx, b.sl.Path, ReadTreeOptions{DropCache: true, Skip: MutableTrees})
	if err != nil {
		return "", "", err
	}
	return info.StaticDigest, TreeDigest(es, DigestOptions{Exclude: MutableTrees}), nil
}

func (b *dirSlot) empty(ctx context.Context) error { return EmptyDir(ctx, b.sl.Path) }

func (b *dirSlot) dropLocalState() error { return b.m.dropPristine(b.id) }

// checkLayers refuses what no backend takes: no layers, or a nil one.
func checkLayers(img Image) error {
	switch {
	case len(img.Layers) == 0:
		return fmt.Errorf("%w: no layers", ErrImageShape)
	case slices.Contains(img.Layers, nil):
		return fmt.Errorf("%w: a layer is nil", ErrImageShape)
	case len(img.DiffIDs) > 0 && len(img.DiffIDs) != len(img.Layers):
		return fmt.Errorf("%w: %d diff_ids for %d layers", ErrImageShape, len(img.DiffIDs), len(img.Layers))
	}
	for i, d := range img.DiffIDs {
		if err := d.Validate(); err != nil {
			return fmt.Errorf("%w: diff_id %d: %v", ErrImageShape, i, err)
		}
	}
	return nil
}

// shapeDiff names the first difference between the extractor's tree
// (without content hashes) and the tree read back, contents aside.
func shapeDiff(written, got []Entry) string {
	g := append([]Entry(nil), got...)
	for i := range g {
		g[i].SHA256 = [32]byte{}
	}
	if d := DiffEntries(written, g, DigestOptions{}); d != "" {
		return d
	}
	return "file contents differ"
}

// writeImage writes the filesystem image (img's one layer: the image
// itself with RawStream, or a tar holding it) from offset 0, within the
// slot's capacity and the image's declared size.
func (b *rawSlot) writeImage(ctx context.Context, img Image, hash bool, idx *indexWriter) (int64, [32]byte, error) {
	m, sl := b.m, b.sl
	var zero [32]byte
	if len(img.Layers) != 1 {
		return 0, zero, fmt.Errorf("%w: %d layers", ErrRawLayer, len(img.Layers))
	}
	capacity := sl.Size
	if capacity == 0 {
		fi, err := m.o.FS.Stat(sl.Path)
		if err != nil {
			return 0, zero, fmt.Errorf("slots: raw slot: %w", err)
		}
		capacity = fi.Size()
		if capacity == 0 {
			capacity = deviceSize(sl.Path)
		}
	}
	src, check := img.Layers[0], func() error { return nil }
	var rec *layerRec
	if !img.RawStream {
		layer := img.Layers[0]
		if idx != nil {
			rec = idx.begin(0, layer)
			layer = rec
		}
		r, size, c, err := RawImage(layer)
		if err != nil {
			return 0, zero, err
		}
		rec.device(0, size) // the file's content is the device's first size bytes
		if size > capacity {
			return 0, zero, fmt.Errorf("%w: image of %d bytes, slot of %d", ErrTooLarge, size, capacity)
		}
		if img.Size > 0 && size > img.Size {
			return 0, zero, fmt.Errorf("%w: image file of %d bytes, the image declares %d", ErrTooLarge, size, img.Size)
		}
		src, check = r, c
	}
	n, sum, err := WriteRaw(ctx, m.o.FS, sl.Path, src, capacity, hash)
	if err != nil {
		return n, sum, err
	}
	if err := check(); err != nil {
		return n, sum, err
	}
	if err := rec.end(); err != nil {
		return n, sum, tarError(err)
	}
	return n, sum, nil
}
