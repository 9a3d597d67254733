//go:build linux

package runner

import (
	"os"
	"strconv"
	"syscall"
	"time"
)

// dieWithParent: SIGTERM this process when the sidecar dies (prctl PR_SET_PDEATHSIG),
// exit now if it already has, and poll as a second line (the death signal follows the
// parent's thread, not its process).
func dieWithParent() {
	_, _, _ = syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0)
	watchParent()
}

func watchParent() {
	want, err := strconv.Atoi(os.Getenv("ALGOMESH_PARENT_PID"))
	if err != nil || want <= 0 {
		return
	}
	if os.Getppid() != want {
		os.Stderr.WriteString("algomesh: parent process is gone; exiting\n")
		os.Exit(1)
	}
	go func() {
		for range time.Tick(time.Second) {
			if os.Getppid() != want {
				os.Stderr.WriteString("algomesh: parent process is gone; exiting\n")
				os.Exit(1)
			}
		}
	}()
}
