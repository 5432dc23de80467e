// Package images generates the bench's synthetic OS images: a small,
// realistic root filesystem (/usr/bin, /usr/lib, /etc, /var, symlinks,
// hard links), an update of it whose last layer carries a whiteout, bad
// variants of the update that the virtual board models as an image that
// hangs at boot or fails its health check, and a pair whose second image
// reuses a layer the first one's last layer removed a file of (what real
// images built with apt do, and what a slot-backed base does not hold
// whole). All are written as OCI image
// layouts and signed with a generated release key, deterministically from a
// seed: the same seed gives the same bytes, digests and keys.
//
// The images are test data for the bench and the demo, not product: they
// hold no executable code (the "binaries" are seeded bytes), only what the
// delta and the slot writer see in a real image.
package images

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/bootorbit/bootorbit/delta/oci"
	gimages "github.com/bootorbit/bootorbit/groundd/images"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
)

// BehaviourFile is where an image tells the virtual board how the board
// should model it once booted: "hang" (flightd never starts, so the
// watchdog is never petted) or "unhealthy" (flightd runs, its health check
// fails). Absent or "ok": a healthy image.
const BehaviourFile = "etc/bootorbit-hil/behaviour"

// Behaviours of an image on the virtual board.
const (
	BehaviourOK        = "ok"
	BehaviourHang      = "hang"
	BehaviourUnhealthy = "unhealthy"
)

// Options configures Generate.
type Options struct {
	// Dir receives the layout (Dir/layout), the release key
	// (Dir/release.key, Dir/release.pub). It must not hold a key already.
	Dir string
	// Seed makes everything deterministic.
	Seed uint64
	// Hardware is the hardware id the releases are signed for.
	Hardware string
	// KeyID names the release key (default 1).
	KeyID uint32
	// Size is the approximate uncompressed size of the base image in bytes
	// (default 3 MiB).
	Size int
	// Platform is the image's (default linux on the running architecture).
	Platform oci.Platform
}

// Image is one generated image.
type Image struct {
	Name      string // base, update, hang, unhealthy
	Ref       string // oci:LAYOUT:TAG
	Tag       string
	Version   uint64
	Behaviour string
	Manifest  digest.Digest
	DiffIDs   []digest.Digest
	// Tars are the layers' uncompressed tars (what a factory install
	// writes into a slot).
	Tars [][]byte
}

// Set is what Generate wrote.
type Set struct {
	Layout     string
	ReleaseKey string // the private key file (PEM)
	ReleasePub string // the public key file (PEM PUBLIC KEY)
	KeyID      uint32
	Hardware   string
	// Base is version 1 (the factory image), Update version 2 (a few
	// files changed, added and deleted), Hang and Unhealthy version 3:
	// the update with a behaviour the board models as a bad image.
	Base, Update, Hang, Unhealthy Image
	// Shadowed (version 4) is the update with a last layer that removes
	// (whiteout) the old documentation of its first layer; Reuse
	// (version 5) keeps that first layer and changes the others: a
	// vehicle running Shadowed holds Reuse's first layer only in part.
	// They come from their own random stream: the other images' bytes
	// do not depend on them.
	Shadowed, Reuse Image
}

// ByName returns the image called name (base, update, hang, unhealthy,
// shadowed, reuse).
func (s *Set) ByName(name string) (Image, bool) {
	for _, im := range []Image{s.Base, s.Update, s.Hang, s.Unhealthy, s.Shadowed, s.Reuse} {
		if im.Name == name {
			return im, true
		}
	}
	return Image{}, false
}

// entry is one tar entry of a layer.
type entry struct {
	typ  byte // tar.TypeReg, TypeDir, TypeSymlink, TypeLink
	name string
	data []byte
	link string
	mode int64
}

// epoch is every entry's modification time: deterministic layers.
var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func tarOf(es []entry) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range es {
		h := &tar.Header{Typeflag: e.typ, Name: e.name, Linkname: e.link, Mode: e.mode, ModTime: epoch, Format: tar.FormatPAX}
		if e.typ == tar.TypeReg {
			h.Size = int64(len(e.data))
		}
		if h.Mode == 0 {
			h.Mode = 0o644
			if e.typ == tar.TypeDir {
				h.Mode = 0o755
			}
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if e.typ == tar.TypeReg {
			if _, err := tw.Write(e.data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

var words = strings.Fields(`flight computer update slot boot watchdog
telemetry command ground vehicle pass orbit uplink downlink frame chunk
journal sync kernel module service config payload sensor attitude thermal
power battery solar array antenna radio beacon mission operator release`)

// text returns n bytes of seeded text: compressible, like /etc and docs.
func text(rng *rand.Rand, n int) []byte {
	var b bytes.Buffer
	for b.Len() < n {
		b.WriteString(words[rng.IntN(len(words))])
		if rng.IntN(9) == 0 {
			b.WriteByte('\n')
		} else {
			b.WriteByte(' ')
		}
	}
	return b.Bytes()[:n]
}

// binary returns n bytes shaped like an executable: runs of seeded noise
// between runs of zeros and repeated tables, so that it compresses a
// little, as real code does.
func binary(rng *rand.Rand, n int) []byte {
	b := make([]byte, 0, n)
	b = append(b, 0x7f, 'E', 'L', 'F', 2, 1, 1)
	for len(b) < n {
		switch rng.IntN(3) {
		case 0:
			for i := rng.IntN(512); i > 0; i-- {
				b = append(b, byte(rng.Uint32()))
			}
		case 1:
			b = append(b, make([]byte, rng.IntN(128))...)
		default:
			t := byte(rng.Uint32())
			for i := rng.IntN(256); i > 0; i-- {
				b = append(b, t, t+1, t+2, t+3)
			}
		}
	}
	return b[:n]
}

// edit changes a few spans of b in place (a patched binary).
func edit(rng *rand.Rand, b []byte) []byte {
	b = bytes.Clone(b)
	for i := 0; i < 4 && len(b) > 64; i++ {
		at := rng.IntN(len(b) - 64)
		for j := 0; j < 32; j++ {
			b[at+j] ^= byte(rng.Uint32()) | 1
		}
	}
	return b
}

func dirs(names ...string) []entry {
	var es []entry
	for _, n := range names {
		es = append(es, entry{typ: tar.TypeDir, name: n + "/"})
	}
	return es
}

// layers builds the base image's four layers and the update's: the base
// system (/usr/lib, /usr/bin with symlinks and a hard link), the
// configuration (/etc), the flight application (/opt/flight) and /var's
// skeleton. The update edits two binaries and the application, adds a
// tool and a configuration file, and deletes a configuration file of the
// layer below with a whiteout in its last layer.
//
// The whiteout deletes a file of the configuration layer, which the bad
// variants change again, not of a layer they reuse (shadowLayers makes
// that shape, issue 13's finding, as a pair of its own).
func layers(rng *rand.Rand, size int) (base, update [][]entry) {
	libSize, binSize := size*5/10, size*3/10
	lib := dirs("usr", "usr/lib", "usr/lib/bootorbit")
	nlibs := 6
	for i := 0; i < nlibs; i++ {
		lib = append(lib, entry{typ: tar.TypeReg, name: fmt.Sprintf("usr/lib/libflight%d.so.1", i), data: binary(rng, libSize/nlibs), mode: 0o755})
		lib = append(lib, entry{typ: tar.TypeSymlink, name: fmt.Sprintf("usr/lib/libflight%d.so", i), link: fmt.Sprintf("libflight%d.so.1", i)})
	}
	lib = append(lib, dirs("usr/share", "usr/share/doc", "usr/share/doc/flight-old")...)
	lib = append(lib, entry{typ: tar.TypeReg, name: "usr/share/doc/flight-old/README", data: text(rng, 4096)})

	bins := dirs("usr", "usr/bin", "usr/sbin", "bin", "sbin")
	nbins := 8
	binData := make([][]byte, nbins)
	for i := 0; i < nbins; i++ {
		binData[i] = binary(rng, binSize/nbins)
		bins = append(bins, entry{typ: tar.TypeReg, name: fmt.Sprintf("usr/bin/tool%d", i), data: binData[i], mode: 0o755})
	}
	bins = append(bins,
		entry{typ: tar.TypeLink, name: "usr/bin/tool0-alias", link: "usr/bin/tool0"},
		entry{typ: tar.TypeSymlink, name: "usr/sbin/init", link: "../bin/tool1"},
	)

	etcFiles := map[string][]byte{
		"etc/os-release":             []byte("NAME=\"Flight OS\"\nVERSION_ID=1\nID=flightos\n"),
		"etc/hostname":               []byte("obc\n"),
		"etc/fstab":                  text(rng, 600),
		"etc/bootorbit/mission.conf": text(rng, 2048),
		"etc/flight/attitude.conf":   text(rng, 8192),
	}
	etc := append(dirs("etc", "etc/bootorbit", "etc/flight", "etc/bootorbit-hil"), sorted(etcFiles)...)
	etc = append(etc, entry{typ: tar.TypeReg, name: BehaviourFile, data: []byte(BehaviourOK + "\n")})

	app := dirs("opt", "opt/flight", "var", "var/lib", "var/lib/flight", "var/log")
	appBin := binary(rng, size-libSize-binSize)
	app = append(app, entry{typ: tar.TypeReg, name: "opt/flight/flightapp", data: appBin, mode: 0o755},
		entry{typ: tar.TypeSymlink, name: "usr-flightapp", link: "opt/flight/flightapp"})
	base = [][]entry{lib, bins, etc, app}

	// The update: layer 0 unchanged; layer 1 two binaries patched; layer
	// 2 os-release and one config changed, a file added; layer 3 the
	// application patched, and a whiteout of the old documentation.
	bins2 := append([]entry(nil), bins...)
	for i := range bins2 {
		if bins2[i].name == "usr/bin/tool2" || bins2[i].name == "usr/bin/tool5" {
			bins2[i].data = edit(rng, bins2[i].data)
		}
	}
	etcFiles2 := map[string][]byte{}
	for k, v := range etcFiles {
		etcFiles2[k] = v
	}
	etcFiles2["etc/os-release"] = []byte("NAME=\"Flight OS\"\nVERSION_ID=2\nID=flightos\n")
	etcFiles2["etc/flight/attitude.conf"] = append(bytes.Clone(etcFiles["etc/flight/attitude.conf"]), []byte("\ngain 0.42\n")...)
	etcFiles2["etc/flight/thermal.conf"] = text(rng, 1024)
	etc2 := append(dirs("etc", "etc/bootorbit", "etc/flight", "etc/bootorbit-hil"), sorted(etcFiles2)...)
	etc2 = append(etc2, entry{typ: tar.TypeReg, name: BehaviourFile, data: []byte(BehaviourOK + "\n")})
	app2 := dirs("etc", "etc/flight", "opt", "opt/flight", "var", "var/lib", "var/lib/flight", "var/log")
	// A new tool: data no delta can take from the old image, what makes
	// the uplink span passes on the slow links.
	app2 = append(app2, entry{typ: tar.TypeReg, name: "opt/flight/flightapp", data: edit(rng, appBin), mode: 0o755},
		entry{typ: tar.TypeReg, name: "opt/flight/star-tracker", data: binary(rng, size/48), mode: 0o755},
		entry{typ: tar.TypeSymlink, name: "usr-flightapp", link: "opt/flight/flightapp"},
		entry{typ: tar.TypeReg, name: "etc/flight/.wh.legacy.conf"})
	update = [][]entry{lib, bins2, etc2, app2}
	return base, update
}

func sorted(files map[string][]byte) []entry {
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	for i := 1; i < len(names); i++ { // insertion sort: a handful of names
		for j := i; j > 0 && names[j] < names[j-1]; j-- {
			names[j], names[j-1] = names[j-1], names[j]
		}
	}
	es := make([]entry, len(names))
	for i, n := range names {
		es[i] = entry{typ: tar.TypeReg, name: n, data: files[n]}
	}
	return es
}

// withBehaviour returns ls with the behaviour file of the configuration
// layer (2) set to b.
func withBehaviour(ls [][]entry, b string) [][]entry {
	out := append([][]entry(nil), ls...)
	etc := append([]entry(nil), ls[2]...)
	for i := range etc {
		if etc[i].name == BehaviourFile {
			etc[i].data = []byte(b + "\n")
		}
	}
	out[2] = etc
	return out
}

// shadowLayers returns, from the update's layers, an image whose last
// layer also removes the old documentation directory of layer 0 (the
// libraries), and a next release that keeps layer 0 and layer 1 and
// changes the configuration and the application.
func shadowLayers(rng *rand.Rand, update [][]entry) (shadowed, reuse [][]entry) {
	app := append([]entry(nil), update[3]...)
	app = append(app, dirs("usr", "usr/share", "usr/share/doc")...)
	app = append(app, entry{typ: tar.TypeReg, name: "usr/share/doc/.wh.flight-old"})
	shadowed = [][]entry{update[0], update[1], update[2], app}

	etc := append([]entry(nil), update[2]...)
	for i := range etc {
		switch etc[i].name {
		case "etc/os-release":
			etc[i].data = []byte("NAME=\"Flight OS\"\nVERSION_ID=5\nID=flightos\n")
		case "etc/flight/thermal.conf":
			etc[i].data = append(bytes.Clone(etc[i].data), []byte("\nheater 2\n")...)
		}
	}
	app2 := append([]entry(nil), update[3]...)
	for i := range app2 {
		if app2[i].name == "opt/flight/flightapp" {
			app2[i].data = edit(rng, app2[i].data)
		}
	}
	reuse = [][]entry{update[0], update[1], etc, app2}
	return shadowed, reuse
}

// seedReader is a deterministic byte stream for key generation.
type seedReader struct{ rng *rand.Rand }

func (r seedReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r.rng.Uint32())
	}
	return len(p), nil
}

// Generate writes the set into o.Dir and signs every image.
func Generate(ctx context.Context, o Options) (*Set, error) {
	if o.Dir == "" || o.Hardware == "" {
		return nil, errors.New("images: Dir and Hardware are required")
	}
	if o.KeyID == 0 {
		o.KeyID = 1
	}
	if o.Size <= 0 {
		o.Size = 3 << 20
	}
	if o.Platform.OS == "" {
		o.Platform = oci.DefaultPlatform()
	}
	if err := os.MkdirAll(o.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x1a2b3c4d))
	s, priv, err := newSet(o)
	if err != nil {
		return nil, err
	}
	base, upd := layers(rng, o.Size)
	shadowed, reuse := shadowLayers(rand.New(rand.NewPCG(o.Seed, 0x5ad0)), upd)
	for _, x := range []struct {
		im      *Image
		name    string
		version uint64
		ls      [][]entry
		beh     string
	}{
		{&s.Base, "base", 1, base, BehaviourOK},
		{&s.Update, "update", 2, upd, BehaviourOK},
		{&s.Hang, "hang", 3, withBehaviour(upd, BehaviourHang), BehaviourHang},
		{&s.Unhealthy, "unhealthy", 3, withBehaviour(upd, BehaviourUnhealthy), BehaviourUnhealthy},
		{&s.Shadowed, "shadowed", 4, shadowed, BehaviourOK},
		{&s.Reuse, "reuse", 5, reuse, BehaviourOK},
	} {
		im, err := write(ctx, s.Layout, x.name, x.ls, o.Platform)
		if err != nil {
			return nil, err
		}
		im.Version, im.Behaviour = x.version, x.beh
		if err := sign(ctx, im, o, priv); err != nil {
			return nil, err
		}
		*x.im = im
	}
	return s, nil
}

// newSet generates the release key of the set (from the seed: the same
// key for the synthetic and the Debian pair of one seed) into o.Dir.
func newSet(o Options) (*Set, ed25519.PrivateKey, error) {
	kf, err := gimages.GenerateKey(filepath.Join(o.Dir, "release"), o.KeyID, seedReader{rand.New(rand.NewPCG(o.Seed, 0x6b6579))})
	if err != nil {
		return nil, nil, fmt.Errorf("images: %w", err)
	}
	_, priv, err := gimages.ReadPrivateKey(kf.Private)
	if err != nil {
		return nil, nil, fmt.Errorf("images: %w", err)
	}
	return &Set{Layout: filepath.Join(o.Dir, "layout"), ReleaseKey: kf.Private, ReleasePub: kf.Public, KeyID: o.KeyID, Hardware: o.Hardware}, priv, nil
}

// sign attaches im's release signature (its version, o's hardware) to
// the layout, as `groundd sign` does.
func sign(ctx context.Context, im Image, o Options, priv ed25519.PrivateKey) error {
	ref, err := gimages.ParseRef(im.Ref)
	if err != nil {
		return fmt.Errorf("images: %w", err)
	}
	if _, _, err := gimages.Sign(ctx, ref, gimages.Options{Platform: o.Platform}, o.KeyID, priv, im.Version, o.Hardware); err != nil {
		return fmt.Errorf("images: sign %s: %w", im.Name, err)
	}
	return nil
}

// OpenLayers opens the image's layers, bottom first, as uncompressed
// tars: from Tars when the set holds them in memory (the synthetic set),
// else from the layout, each verified against its diff_id as it is read
// (the Debian pair: hundreds of MB). The caller closes every reader.
func (im Image) OpenLayers() ([]io.ReadCloser, error) {
	if len(im.Tars) > 0 {
		rs := make([]io.ReadCloser, len(im.Tars))
		for i, t := range im.Tars {
			rs[i] = io.NopCloser(bytes.NewReader(t))
		}
		return rs, nil
	}
	ref, err := oci.ParseRef(im.Ref)
	if err != nil {
		return nil, fmt.Errorf("images: %w", err)
	}
	ref.Tag, ref.Digest = "", im.Manifest
	oim, err := oci.Open(ref)
	if err != nil {
		return nil, fmt.Errorf("images: %s: %w", im.Name, err)
	}
	var rs []io.ReadCloser
	for i := range oim.Layers() {
		r, err := oim.OpenLayer(i)
		if err != nil {
			for _, r := range rs {
				r.Close()
			}
			return nil, fmt.Errorf("images: %s: %w", im.Name, err)
		}
		rs = append(rs, r)
	}
	return rs, nil
}

// write adds the image of ls to the layout under tag: each layer a
// zstd blob (the first gzip, as images built by older tools have).
func write(_ context.Context, layout, tag string, ls [][]entry, p oci.Platform) (Image, error) {
	w, err := oci.Create(layout)
	if err != nil {
		return Image{}, fmt.Errorf("images: %w", err)
	}
	im := Image{Name: tag, Tag: tag, Ref: "oci:" + layout + ":" + tag}
	var descs []oci.Descriptor
	for i, es := range ls {
		t, err := tarOf(es)
		if err != nil {
			return Image{}, fmt.Errorf("images: layer %d: %w", i, err)
		}
		c := oci.Zstd
		if i == 0 {
			c = oci.Gzip
		}
		blob, err := compress(c, t)
		if err != nil {
			return Image{}, fmt.Errorf("images: layer %d: %w", i, err)
		}
		d, err := w.WriteBlobBytes(mediaType(c), blob)
		if err != nil {
			return Image{}, fmt.Errorf("images: layer %d: %w", i, err)
		}
		descs = append(descs, d)
		im.Tars = append(im.Tars, t)
		im.DiffIDs = append(im.DiffIDs, digest.FromBytes(t))
	}
	md, err := w.Commit(tag, oci.NewConfig(p, im.DiffIDs), descs, nil)
	if err != nil {
		return Image{}, fmt.Errorf("images: %w", err)
	}
	im.Manifest = md.Digest
	return im, nil
}

func compress(c oci.Compression, b []byte) ([]byte, error) {
	switch c {
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
		defer enc.Close()
		return enc.EncodeAll(b, nil), nil
	}
	return b, nil
}

func mediaType(c oci.Compression) string {
	switch c {
	case oci.Gzip:
		return oci.MediaTypeOCILayerGzip
	case oci.Zstd:
		return oci.MediaTypeOCILayerZstd
	}
	return oci.MediaTypeOCILayer
}
