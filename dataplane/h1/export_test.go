package h1

// Waiting is how many requests wait for a connection (tests poll it
// instead of sleeping).
func (t *Transport) Waiting() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.waiters)
}
