package scripts

import (
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// TestSlowestTestsListsOwnTimes: scripts/ci/slowest-tests.sh lists each
// top-level test's own time, with the wait at the e2e parallel group's
// gate taken off (go test counts it), from a log where the group's tests'
// output interleaves.
func TestSlowestTestsListsOwnTimes(t *testing.T) {
	tests := []struct {
		name, log, want string
	}{
		{"serial tests as go test reports them", `=== RUN   TestA
--- PASS: TestA (12.50s)
=== RUN   TestB
--- FAIL: TestB (100.00s)
    --- PASS: TestB/sub (99.00s)
`, "100.00 TestB\n12.50 TestA\n"},
		{"the gate's wait is taken off", `=== RUN   TestLong
=== PAUSE TestLong
=== RUN   TestShort
=== PAUSE TestShort
=== CONT  TestLong
    e2e_group_test.go:60: the parallel group starts it after 1s (1212 s expected)
=== CONT  TestShort
=== NAME  TestShort
    e2e_group_test.go:60: the parallel group starts it after 1h2m3s (460 s expected)
    e2e_image_test.go:1: something
=== NAME  TestLong
    e2e_ci_test.go:402: the first cell job (cold)
--- PASS: TestLong (1331.50s)
=== NAME  TestShort
--- PASS: TestShort (4000.00s)
`, "1330.50 TestLong\n277.00 TestShort\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			log := filepath.Join(t.TempDir(), "make-test.log")
			if err := os.WriteFile(log, []byte(tt.log), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command("bash", "ci/slowest-tests.sh", log).Output()
			if err != nil || string(out) != tt.want {
				t.Errorf("slowest-tests.sh: %v\ngot:\n%swant:\n%s", err, out, tt.want)
			}
		})
	}
}
