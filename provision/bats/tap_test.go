package bats

import (
	"strings"
	"testing"

	"github.com/envctl/envctl/provision/report"
)

func TestParseTAP(t *testing.T) {
	out := `bats warning: something not TAP
1..5
ok 1 OCI image volume mount lifecycle
ok 2 OCI image volume SELinux # skip not enforcing
not ok 3 OCI image volume does not exist locally
# (in test file oci_volumes.bats, line 78)
#   ` + "`" + `crictl run "$TESTDATA"/container_sleep.json' failed
# time="2026" level=fatal msg="mount.HostPath is empty"
ok 4 OCI image volume mount with sub path # SKIP requires crictl version "1.31" or newer
ok 5 OCI image volume mount with invalid sub path
`
	tap := ParseTAP(out)
	if tap.Planned != 5 || len(tap.Tests) != 5 || tap.Complete() != nil {
		t.Fatalf("tap %+v %v", tap, tap.Complete())
	}
	want := []struct {
		name   string
		status report.Status
		reason string
	}{
		{"OCI image volume mount lifecycle", report.Pass, ""},
		{"OCI image volume SELinux", report.Skip, "not enforcing"},
		{"OCI image volume does not exist locally", report.Fail, ""},
		{"OCI image volume mount with sub path", report.Skip, `requires crictl version "1.31" or newer`},
		{"OCI image volume mount with invalid sub path", report.Pass, ""},
	}
	for i, w := range want {
		got := tap.Tests[i]
		if got.Name != w.name || got.Status != w.status || got.Reason != w.reason || got.Number != i+1 {
			t.Errorf("test %d: %+v, want %+v", i+1, got, w)
		}
	}
	if !strings.Contains(tap.Tests[2].Output, "mount.HostPath is empty") || !strings.Contains(tap.Tests[2].Output, "line 78") {
		t.Errorf("failed test's output %q", tap.Tests[2].Output)
	}
	if tap.AllSkipped() {
		t.Error("all skipped")
	}
}

func TestTAPCompleteness(t *testing.T) {
	tests := []struct {
		name, out, err string
		allSkipped     bool
	}{
		{"bail out", "1..5\nok 1 a\nBail out! crio did not start\n", "bailed out: crio did not start", false},
		{"no plan", "bats: command not found\n", "no plan line", false},
		{"short", "1..3\nok 1 a\n", "planned 3 tests and reported 1", false},
		{"all skipped", "1..2\nok 1 a # skip requires crictl version \"1.31\" or newer\nok 2 b # skip requires crictl version \"1.31\" or newer\n", "", true},
		{"empty plan", "1..0\n", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tap := ParseTAP(tt.out)
			err := tap.Complete()
			if (tt.err == "") != (err == nil) || err != nil && !strings.Contains(err.Error(), tt.err) {
				t.Errorf("complete: %v, want %q", err, tt.err)
			}
			if tap.AllSkipped() != tt.allSkipped {
				t.Errorf("all skipped: %v", tap.AllSkipped())
			}
		})
	}
}
