package etcdtest

import (
	"os/exec"
	"syscall"
)

// dieWithParent: an etcd whose test binary died (a timeout, a kill) dies
// too, rather than hold its ports and temp dir.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
