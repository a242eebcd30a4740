package ports

import "testing"

func TestFreePortsAreDistinct(t *testing.T) {
	ps, err := Free(4)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ps {
		if seen[p] || p == 0 {
			t.Fatalf("ports %v", ps)
		}
		seen[p] = true
	}
}
