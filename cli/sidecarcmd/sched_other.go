//go:build !linux

package sidecarcmd

// batchScheduling is Linux's SCHED_BATCH; elsewhere the sidecar keeps the
// normal policy.
func batchScheduling() error { return nil }
