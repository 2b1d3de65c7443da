package env

import (
	"os"
	"testing"
)

// A lease is held while its process holds it, and not once released or
// when its file is gone (the process died and something cleaned up).
func TestLease(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	path, release, err := s.TakeLease()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		step func()
		want bool
	}{
		{"held", func() {}, true},
		{"released", release, false},
		{"file gone", func() { os.Remove(path) }, false},
	} {
		tc.step()
		if got := LeaseHeld(path); got != tc.want {
			t.Errorf("%s: held %v, want %v", tc.name, got, tc.want)
		}
	}
}
