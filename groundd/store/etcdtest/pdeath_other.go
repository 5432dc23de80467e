//go:build !linux

package etcdtest

import "os/exec"

func dieWithParent(cmd *exec.Cmd) {}
