package main

import (
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/bootorbit/bootorbit/groundd/images"
	"github.com/bootorbit/bootorbit/internal/cli"
	"github.com/opencontainers/go-digest"
	"github.com/spf13/cobra"
)

func init() {
	commands.Group("images", "pull, list and inspect the images of the ground's image store",
		`The images commands work on the ground's image store, a content-addressed
directory (an OCI image layout) of every image pulled: from OCI layouts
(oci:PATH:TAG, oci:PATH@sha256:...) and registries (docker://HOST/REPO:TAG,
docker://HOST/REPO@sha256:...), with the signatures found beside them. Every
blob is verified by digest as it is stored and as it is read; a corrupted one
is reported by digest and never used.`)
	commands.Add("images", func() *cobra.Command {
		var f imagesFlags
		c := &cobra.Command{
			Use:   "pull --store DIR REF",
			Short: "fetch an image and its signatures into the store",
			Long: `Pull fetches the image REF names into the store: for a multi-arch index the
manifest of --platform (the vehicle's), its config and layers, each verified
by digest and size, every layer against its diff_id, and the release
signatures beside it. Blobs already stored intact are not fetched again.`,
			Example: `  groundd images pull --store /var/lib/groundd/images oci:build/os:42
  groundd images pull --store store --platform linux/arm64 --ca-file ca.pem docker://registry.example:5000/flight/os:stable`,
			Args: exactlyOneArg,
			RunE: func(c *cobra.Command, args []string) error { return runPull(c, &f, args) },
		}
		f.add(c, true)
		return c
	})
	commands.Add("images", func() *cobra.Command {
		var f imagesFlags
		c := &cobra.Command{
			Use:     "ls --store DIR",
			Short:   "list the images in the store",
			Long:    `Ls lists the stored images: manifest digest, platform, when and where from.`,
			Example: `  groundd images ls --store store`,
			Args:    cli.NoArgs,
			RunE:    func(c *cobra.Command, _ []string) error { return runLs(c, &f) },
		}
		f.add(c, false)
		return c
	})
	commands.Add("images", func() *cobra.Command {
		var f imagesFlags
		c := &cobra.Command{
			Use:   "show --store DIR DIGEST",
			Short: "show a stored image: layers, diff_ids and signatures",
			Long: `Show prints a stored image: its manifest digest and media type, platform,
layers (blob digest, size, compression, diff_id) and the release signatures
found beside it (not verified: groundd verify does that).`,
			Example: `  groundd images show --store store sha256:4f2c...`,
			Args:    exactlyOneArg,
			RunE:    func(c *cobra.Command, args []string) error { return runShow(c, &f, args) },
		}
		f.add(c, false)
		return c
	})
	commands.Add("images", func() *cobra.Command {
		var f imagesFlags
		c := &cobra.Command{
			Use:   "check --store DIR",
			Short: "verify every blob of the store",
			Long: `Check reads every blob of the store and verifies it against its digest.
Corrupted blobs are reported by digest and moved out of blobs/ (to corrupt/),
so that nothing uses them; pull the image again to repair it. Exit 1 when
any blob was corrupted.`,
			Example: `  groundd images check --store store`,
			Args:    cli.NoArgs,
			RunE:    func(c *cobra.Command, _ []string) error { return runCheck(c, &f) },
		}
		f.add(c, false)
		return c
	})
}

type imagesFlags struct {
	store         string
	maxSize       int64
	img           imageFlags
	verbose, json bool
}

func (f *imagesFlags) add(c *cobra.Command, pull bool) {
	c.Flags().StringVar(&f.store, "store", "", "the image store `DIR` (required)")
	if pull {
		f.img.add(c.Flags())
		cli.SizeVar(c.Flags(), &f.maxSize, "max-image-size", images.DefaultMaxImageSize, "refuse an image whose config and layers add up to more (checked before fetching)")
	}
	cli.VerboseFlag(c, &f.verbose)
	cli.JSONFlag(c, &f.json)
}

func (f *imagesFlags) open(c *cobra.Command) (*images.Store, error) {
	if f.store == "" {
		return nil, cli.Usagef("--store is required")
	}
	return images.OpenStore(f.store, cli.Logger(c.ErrOrStderr(), f.verbose))
}

func runPull(c *cobra.Command, f *imagesFlags, args []string) error {
	ref, o, err := f.img.target(args)
	if err != nil {
		return err
	}
	if f.maxSize <= 0 {
		return cli.Usagef("--max-image-size must be more than 0")
	}
	o.MaxImageSize = f.maxSize
	s, err := f.open(c)
	if err != nil {
		return err
	}
	im, err := s.Pull(c.Context(), ref, o)
	if err != nil {
		return err
	}
	return printImage(c, f, im)
}

func runLs(c *cobra.Command, f *imagesFlags) error {
	s, err := f.open(c)
	if err != nil {
		return err
	}
	ents, err := s.List()
	if err != nil {
		return err
	}
	if f.json {
		return cli.WriteJSON(c.OutOrStdout(), orEmpty(ents))
	}
	tw := tabwriter.NewWriter(c.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DIGEST\tPLATFORM\tPULLED\tSOURCE")
	for _, e := range ents {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Digest, e.Platform, e.Pulled, e.Source)
	}
	return tw.Flush()
}

func runShow(c *cobra.Command, f *imagesFlags, args []string) error {
	d, err := digest.Parse(strings.TrimPrefix(args[0], "@"))
	if err != nil {
		return cli.Usagef("%q: want a manifest digest (sha256:...): %v", args[0], err)
	}
	s, err := f.open(c)
	if err != nil {
		return err
	}
	im, err := s.Image(c.Context(), d)
	if err != nil {
		return err
	}
	return printImage(c, f, im)
}

// imageDoc is the --json document of groundd images pull and show.
type imageDoc struct {
	Digest     string       `json:"digest"`
	MediaType  string       `json:"media_type"`
	Platform   string       `json:"platform"`
	Source     string       `json:"source,omitempty"`
	Layers     []layerDoc   `json:"layers"`
	Signatures []releaseDoc `json:"signatures"`
}

type layerDoc struct {
	Digest      string `json:"digest"`
	Size        int64  `json:"size"`
	MediaType   string `json:"media_type"`
	Compression string `json:"compression"`
	DiffID      string `json:"diff_id"`
}

func printImage(c *cobra.Command, f *imagesFlags, im *images.Image) error {
	doc := imageDoc{Digest: string(im.Digest), MediaType: im.MediaType, Platform: im.Platform.String(), Source: im.Source, Layers: []layerDoc{}, Signatures: []releaseDoc{}}
	for _, l := range im.Layers {
		doc.Layers = append(doc.Layers, layerDoc{Digest: string(l.Digest), Size: l.Size, MediaType: l.MediaType, Compression: l.Compression.String(), DiffID: string(l.DiffID)})
	}
	for _, rs := range im.Signatures {
		doc.Signatures = append(doc.Signatures, releaseDoc{Manifest: string(rs.Release.Manifest), Version: rs.Release.Version, Hardware: rs.Release.HardwareID, KeyID: rs.KeyID})
	}
	if f.json {
		return cli.WriteJSON(c.OutOrStdout(), doc)
	}
	w := c.OutOrStdout()
	fmt.Fprintf(w, "image    %s\ntype     %s\nplatform %s\n", doc.Digest, doc.MediaType, doc.Platform)
	if doc.Source != "" {
		fmt.Fprintf(w, "source   %s\n", doc.Source)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "LAYER\tBLOB\tSIZE\tCOMPRESSION\tDIFF_ID")
	for i, l := range doc.Layers {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", i, l.Digest, cli.FormatSize(l.Size), l.Compression, l.DiffID)
	}
	tw.Flush()
	if len(doc.Signatures) == 0 {
		fmt.Fprintln(w, "signatures: none")
	}
	for _, s := range doc.Signatures {
		fmt.Fprintf(w, "signature: release %d for %s, key %d (unverified: see groundd verify)\n", s.Version, s.Hardware, s.KeyID)
	}
	return nil
}

func runCheck(c *cobra.Command, f *imagesFlags) error {
	s, err := f.open(c)
	if err != nil {
		return err
	}
	bad, err := s.Check(c.Context())
	if err != nil {
		return err
	}
	msgs := []string{}
	for _, e := range bad {
		msgs = append(msgs, e.Error())
	}
	if f.json {
		if err := cli.WriteJSON(c.OutOrStdout(), map[string]any{"corrupted": msgs}); err != nil {
			return err
		}
	} else {
		for _, m := range msgs {
			fmt.Fprintln(c.OutOrStdout(), m)
		}
	}
	if len(bad) > 0 {
		return fmt.Errorf("%d corrupted blob(s) moved aside; pull their images again", len(bad))
	}
	if !f.json {
		fmt.Fprintln(c.OutOrStdout(), "every blob verified")
	}
	return nil
}
