// Package images is the ground's view of OS images: it reads OCI image
// layouts and pulls from OCI registries, keeps what it fetched in a
// content-addressed store, signs releases and finds and verifies their
// signatures, follows tags, and keeps planned uplinks in a registry.
//
// References are "oci:PATH:TAG", "oci:PATH@sha256:HEX" (a layout directory,
// as skopeo, umoci, buildah and podman write them) and
// "docker://HOST/REPO:TAG" or "docker://HOST/REPO@sha256:HEX" (a registry,
// through go-containerregistry, with docker config.json credentials, an
// optional CA file, and plain HTTP only when asked).
//
// What it promises:
//   - Every byte it hands out was verified: manifests and configs by digest
//     and size before they are parsed, layer blobs by digest and size as they
//     are stored and again as they are read, and layers' uncompressed tars
//     against the config's diff_ids before an image is recorded in the store.
//   - The store (Store) is itself an OCI image layout: blobs by digest,
//     written through a synced temporary file renamed into place, index.json
//     replaced atomically last. A blob whose content no longer matches its
//     digest is reported by digest, moved out of blobs/ and never used.
//   - Release signatures (protocol/update.ReleaseSignature) travel with the
//     image as an OCI artifact whose subject is the image manifest, tagged
//     "sha256-HEX.sig" (cosign's tag scheme), so that skopeo copy and skopeo
//     sync carry them like any other tag; in a registry the artifact is also
//     found through the referrers API or its tag fallback.
//   - A planned uplink (signed plan and delta bundle) travels between ground
//     stations as a bundle artifact whose subject is its target image
//     (PushBundle), fetched by digest with every blob verified and bounded
//     as it is read (FetchBundle).
//   - A Watcher polls a tag and reports each move to a new digest with the
//     verdict on its signatures, on a clock the caller can replace.
package images
