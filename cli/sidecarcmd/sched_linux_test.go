package sidecarcmd

import (
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Every thread ends up SCHED_BATCH, the runtime's later ones included.
func TestBatchSchedulingCoversEveryThread(t *testing.T) {
	if err := batchScheduling(); err != nil {
		t.Fatal(err)
	}
	// Threads the runtime starts from now on: goroutines locked to their
	// own threads, all alive at once.
	var started, done sync.WaitGroup
	release := make(chan struct{})
	for range 4 {
		started.Add(1)
		done.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			started.Done()
			<-release
		})
	}
	started.Wait()
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		t.Fatal(err)
	}
	for _, task := range tasks {
		tid, _ := strconv.Atoi(task.Name())
		a, err := unix.SchedGetAttr(tid, 0)
		if err != nil {
			continue // exited meanwhile
		}
		if a.Policy != unix.SCHED_BATCH {
			t.Errorf("thread %d has policy %d, want SCHED_BATCH (%d)", tid, a.Policy, unix.SCHED_BATCH)
		}
	}
	close(release)
	done.Wait()
}
