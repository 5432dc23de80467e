package oci_test

import (
	"io"
	"math/rand/v2"
	"testing"

	"github.com/bootorbit/bootorbit/delta/oci"
	"github.com/bootorbit/bootorbit/delta/ocitest"
)

// BenchmarkOpenLayer measures reading a verified layer stream (blob digest,
// decompression, diff_id) per compression.
func BenchmarkOpenLayer(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	layers := ocitest.RandomLayers(rng, ocitest.GenOptions{Layers: 1, Files: 400, MaxFileSize: 64 << 10})
	for _, c := range []oci.Compression{oci.Uncompressed, oci.Gzip, oci.Zstd} {
		b.Run(c.String(), func(b *testing.B) {
			layers[0].Compression = c
			im := ocitest.Build(b, b.TempDir(), "b", layers)
			o, err := oci.Open(im.Ref)
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(im.Tars[0])))
			for b.Loop() {
				rc, err := o.OpenLayer(0)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := io.Copy(io.Discard, rc); err != nil {
					b.Fatal(err)
				}
				rc.Close()
			}
		})
	}
}
