//go:build linux

package main

import (
	"os"
	"strconv"
	"testing"
)

// holder finds the descriptor by which a process holds a device open
// (the hang checks flightd holds the watchdog before freezing it), and
// says when it does not.
func TestHolder(t *testing.T) {
	f, err := os.Open("/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fd, err := holder(os.Getpid(), "/dev/null")
	if err != nil {
		t.Fatal(err)
	}
	if l, err := os.Readlink("/proc/self/fd/" + strconv.Itoa(fd)); err != nil || l != "/dev/null" {
		t.Fatalf("fd %d is %q (%v)", fd, l, err)
	}
	if _, err := holder(os.Getpid(), "/dev/watchdog-not-held"); err == nil {
		t.Fatal("a device not held was found")
	}
}
