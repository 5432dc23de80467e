// Package oci reads and writes OCI image layouts (the directory form written
// by skopeo, umoci, buildah and podman) for the delta engine.
//
// Reading resolves a reference (a tag or a manifest digest) through index.json
// and any nested image indexes to one image manifest, selecting a platform
// when there are several, and accepts both OCI and Docker v2 media types.
// Every blob is verified by digest and size as it is read; a layer stream is
// also verified against its diff_id from the image config. Verification
// happens at end of stream: a mismatch is returned by Read in place of io.EOF,
// so a caller that reads a layer to its end has read exactly the bytes the
// config names, or has an error naming the blob. JSON documents (index,
// manifest, config) are size-capped before they are read, and decompression
// is bounded (zstd window and memory limits).
//
// Writing (Writer) creates or extends a layout: blobs are streamed to
// temporary files, digested on the way, synced and renamed into place, and
// index.json is replaced atomically last, so a crash leaves either the old
// layout or the new one, never an index naming a missing blob.
package oci
