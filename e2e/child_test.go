package e2e

import (
	"os/exec"
	"runtime"
	"syscall"
	"testing"
)

// startChild starts cmd, a server a test needs, so that the kernel kills it if the test binary
// dies (Pdeathsig), and kills it when the test ends. The death signal comes when the *thread*
// that started the child ends, and Go ends threads that a goroutine locked and left
// (go.dev/issue/27505): started from any thread, the child could die in the middle of the test.
// So it is started from a goroutine locked to its thread until the child is gone.
func startChild(t testing.TB, cmd *exec.Cmd) {
	t.Helper()
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	started, done := make(chan error, 1), make(chan struct{})
	go func() {
		runtime.LockOSThread() // never unlocked: the thread ends with this goroutine
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		cmd.Wait()
		close(done)
	}()
	if err := <-started; err != nil {
		t.Fatalf("start %s: %v", cmd.Path, err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-done
	})
}
