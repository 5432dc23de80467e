// Package delta reads OCI images and computes and applies layer-level deltas
// between them, so that a vehicle receives only what it does not already hold.
package delta
