package compat

import (
	"strings"
	"testing"
)

func TestPredictAndDiagnose(t *testing.T) {
	tests := []struct {
		versions map[string]string
		n        int
		want     string
	}{
		{map[string]string{"cri-o": "1.34.0", "cri-tools": "1.30.0"}, 1, "crictl v1.30.0 does not send CRI Mount.image (image volumes need cri-tools ≥ 1.31): upgrade cri-tools or pin a matching pair"},
		{map[string]string{"cri-o": "1.34.0", "cri-tools": "1.34.0"}, 0, ""},
		{map[string]string{"cri-o": "1.30.2", "cri-tools": "1.34.0"}, 1, "CRI-O v1.30.2 has no OCI image volume support"},
		{map[string]string{"cri-o": "1.34.0", "cri-tools": "1.34.0", "crun": "1.8.1"}, 1, "crun v1.8.1 accepts only OCI runtime spec 1.0.x"},
		{map[string]string{"cri-o": "1.34.0", "cri-tools": "1.34.0", "crun": "1.14.3"}, 0, ""},
	}
	for _, tt := range tests {
		got := Predict("image-volume-lifecycle", tt.versions)
		if len(got) != tt.n || (tt.n > 0 && !strings.Contains(got[0].String(), tt.want)) {
			t.Errorf("Predict(%v) = %v", tt.versions, got)
		}
	}
	if got := Predict("none", map[string]string{"cri-tools": "1.30.0"}); len(got) != 0 {
		t.Errorf("predicted for another test: %v", got)
	}
	raw := "time=... level=fatal msg=\"creating container: rpc error: code = Unknown desc = mount.HostPath is empty\""
	if d := Diagnose(raw, "image-volume-lifecycle", map[string]string{"cri-tools": "1.30.0"}); len(d) != 1 {
		t.Errorf("Diagnose = %v", d)
	}
	if d := Diagnose("some other error", "image-volume-lifecycle", map[string]string{"cri-tools": "1.30.0"}); len(d) != 0 {
		t.Errorf("Diagnose blamed crictl for an unrelated error: %v", d)
	}
}
