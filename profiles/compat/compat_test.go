package compat

import (
	"strings"
	"testing"

	"github.com/envctl/envctl/profiles"
)

func TestPredictFromVersions(t *testing.T) {
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
		{map[string]string{"cri-tools": "not-a-version"}, 0, ""},
	}
	for _, tt := range tests {
		got := Predict(profiles.TestImageVolume, tt.versions, nil)
		if len(got) != tt.n || (tt.n > 0 && !strings.Contains(got[0].String(), tt.want)) {
			t.Errorf("Predict(%v) = %v", tt.versions, got)
		}
	}
	if got := Predict(profiles.TestNone, map[string]string{"cri-tools": "1.30.0"}, nil); len(got) != 0 {
		t.Errorf("predicted for another test: %v", got)
	}
}

func TestPredictFromBuilds(t *testing.T) {
	crio := Build{Component: "cri-o", Version: "1.34.0", Binary: "crio", CRIAPI: "v0.33.0", RuntimeSpec: "v1.2.1"}
	tests := []struct {
		name     string
		versions map[string]string
		builds   []Build
		want     []string
	}{
		{"old crictl by build info", map[string]string{"cri-tools": "9.9.9"}, []Build{{Component: "cri-tools", Version: "9.9.9", Binary: "crictl", CRIAPI: "v0.0.0-20240417201531-b7b7c17fd8b6 (replaced: k8s.io/kubernetes/staging/src/k8s.io/cri-api)"}},
			[]string{"crictl 9.9.9 was built with cri-api ≈ v0.30", "mount.HostPath is empty"}},
		{"old crio by build info", map[string]string{}, []Build{{Component: "cri-o", Version: "x", Binary: "crio", CRIAPI: "v0.30.1"}}, []string{"crio x was built with cri-api v0.30, which lacks Mount.image"}},
		{"no sub path", map[string]string{}, []Build{{Component: "cri-tools", Version: "y", Binary: "crictl", CRIAPI: "v0.32.0"}}, []string{"lacks Mount.image_sub_path"}},
		{"crun and spec 1.2", map[string]string{"crun": "1.8.1"}, []Build{crio}, []string{"crun v1.8.1 accepts only", "crio 1.34.0 was built with OCI runtime-spec v1.2.1"}},
		{"new crun is fine", map[string]string{"crun": "1.21"}, []Build{crio}, nil},
		{"current stack is fine", map[string]string{"cri-tools": "1.34.0"}, []Build{crio, {Component: "cri-tools", Version: "1.34.0", Binary: "crictl", CRIAPI: "v0.34.0-rc.2"}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Predict(profiles.TestImageVolume, tt.versions, tt.builds)
			var all []string
			for _, f := range got {
				all = append(all, f.String()+" ["+f.Symptom+"]")
			}
			joined := strings.Join(all, "\n")
			if len(tt.want) == 0 && len(got) != 0 {
				t.Errorf("predicted %s", joined)
			}
			for _, w := range tt.want {
				if !strings.Contains(joined, w) {
					t.Errorf("predictions lack %q:\n%s", w, joined)
				}
			}
		})
	}
}

func TestDiagnose(t *testing.T) {
	predicted := Predict(profiles.TestImageVolume, map[string]string{"cri-tools": "1.30.0"}, nil)
	raw := "time=... level=fatal msg=\"creating container: rpc error: code = Unknown desc = mount.HostPath is empty\""
	if d := Diagnose(raw, predicted); len(d) != 1 {
		t.Errorf("Diagnose = %v", d)
	}
	if d := Diagnose("some other error", predicted); len(d) != 0 {
		t.Errorf("Diagnose blamed crictl for an unrelated error: %v", d)
	}
}

func TestCRIAPIMinor(t *testing.T) {
	tests := []struct {
		in     string
		minor  int
		approx bool
		err    bool
	}{
		{"v0.34.0-rc.2", 34, false, false},
		{"v0.33.0", 33, false, false},
		{"v0.0.0-20240417201531-b7b7c17fd8b6 (replaced: k8s.io/kubernetes/staging/src/k8s.io/cri-api)", 30, true, false},
		{"v0.0.0-20240901000000-aaaaaaaaaaaa", 31, true, false},
		{"v0.0.0-20100101000000-aaaaaaaaaaaa", 0, false, true},
		{"v1.2.3", 0, false, true},
		{"banana", 0, false, true},
	}
	for _, tt := range tests {
		m, approx, err := CRIAPIMinor(tt.in)
		if (err != nil) != tt.err || m != tt.minor || approx != tt.approx {
			t.Errorf("CRIAPIMinor(%q) = %d, %v, %v", tt.in, m, approx, err)
		}
	}
}

// Upstream's requires_crictl gate is known before anything boots: plan
// predicts the skip for the upstream suite only, next to the stack's own
// incompatibility, which holds for both suites.
func TestUpstreamGateIsPredicted(t *testing.T) {
	old := map[string]string{"cri-o": "1.34.0", "cri-tools": "1.30.0"}
	for _, tc := range []struct {
		test        profiles.TestName
		gate, stack bool
	}{
		{profiles.TestImageVolume, false, true},
		{profiles.TestUpstream, true, true},
		{profiles.TestBoth, true, true},
		{"upstream:image_volume.bats", false, false},
		{profiles.TestNone, false, false},
	} {
		var gate, stack bool
		for _, f := range Predict(tc.test, old, nil) {
			if f.Skips && strings.Contains(f.Cause, `requires_crictl "1.31"`) {
				gate = true
			}
			if !f.Skips && strings.Contains(f.Cause, "does not send CRI Mount.image") {
				stack = true
			}
		}
		if gate != tc.gate || stack != tc.stack {
			t.Errorf("%s: gate %v stack %v, want %v %v", tc.test, gate, stack, tc.gate, tc.stack)
		}
	}
	if fs := Predict(profiles.TestUpstream, map[string]string{"cri-tools": "1.34.0"}, nil); len(fs) != 0 {
		t.Errorf("crictl 1.34.0 predicted %v", fs)
	}
}
