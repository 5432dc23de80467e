// Package scenarios holds the shipped scenario files of `hil run`
// (docs/hil.md, "Scenarios"), embedded so that `hil run --all` needs
// nothing but the binary and a go toolchain to build flightd.
package scenarios

import "embed"

// FS holds the *.json scenario files.
//
//go:embed *.json
var FS embed.FS
