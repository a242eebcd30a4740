package sidecarcmd

import (
	"fmt"
	"os"
	"strconv"

	"golang.org/x/sys/unix"
)

// batchScheduling moves every thread of this process to SCHED_BATCH. Such
// a thread, woken (by a packet, say), waits for the running thread to yield
// instead of preempting it. On a small machine the sidecar's wake-ups
// otherwise preempt the very thread that sent to it, mid-syscall, while
// that thread holds the sender's only P (docs/dataplane.md, Performance).
// Threads inherit the policy of the thread that creates them, so the
// runtime's later threads are batch too; a thread created during a pass is
// caught by the next.
func batchScheduling() error {
	for range 3 {
		changed := 0
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			return fmt.Errorf("batch scheduling: %w", err)
		}
		for _, t := range tasks {
			tid, err := strconv.Atoi(t.Name())
			if err != nil {
				continue
			}
			if a, err := unix.SchedGetAttr(tid, 0); err == nil && a.Policy == unix.SCHED_BATCH {
				continue
			}
			if err := unix.SchedSetAttr(tid, &unix.SchedAttr{Policy: unix.SCHED_BATCH}, 0); err != nil && err != unix.ESRCH {
				return fmt.Errorf("batch scheduling: thread %d: %w", tid, err)
			}
			changed++
		}
		if changed == 0 {
			return nil
		}
	}
	return nil
}
