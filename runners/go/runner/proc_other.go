//go:build !linux

package runner

import (
	"os"
	"strconv"
	"syscall"
	"time"
)

// dieWithParent: off Linux, poll the sidecar's pid.
func dieWithParent() {
	want, err := strconv.Atoi(os.Getenv("ALGOMESH_PARENT_PID"))
	if err != nil || want <= 0 {
		return
	}
	go func() {
		for range time.Tick(time.Second) {
			if os.Getppid() != want || syscall.Kill(want, 0) != nil {
				os.Exit(1)
			}
		}
	}()
}
