package main

import (
	"os"
	"testing"
)

// TestCPUSeconds: /proc/<pid>/stat is read for live processes (this one has used some CPU), and a process that
// cannot be read makes the measurement unavailable rather than wrong.
func TestCPUSeconds(t *testing.T) {
	x := 0
	for i := range 50_000_000 {
		x += i % 7
	}
	if x == 0 {
		t.Fatal("the busy loop was optimised away")
	}
	if got := cpuSeconds([]int{os.Getpid()}); got <= 0 {
		t.Errorf("cpuSeconds(self) = %v, want > 0", got)
	}
	if got := cpuSeconds(nil); got != -1 {
		t.Errorf("cpuSeconds(none) = %v, want -1", got)
	}
	if got := cpuSeconds([]int{os.Getpid(), 1 << 30}); got != -1 {
		t.Errorf("cpuSeconds(missing pid) = %v, want -1", got)
	}
}
