package report

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/compat"
)

func TestReportRendering(t *testing.T) {
	r := &Report{Profile: "p", Cell: "p", Test: "image-volume-lifecycle", Verdict: VerdictFail, Seconds: 12,
		Components: []Component{{Name: "cri-o", Locked: "1.34.0", Actual: "1.34.0", Verified: true}, {Name: "cri-tools", Locked: "1.30.0", Actual: "1.30.0", Verified: true}}}
	r.Steps = []Step{
		NewStep(Step{Name: "pull", Status: Pass, Duration: time.Second, Command: "crictl pull x"}),
		NewStep(Step{Name: "run", Status: Fail, Duration: 2 * time.Second, Command: "crictl run", Output: "rpc error: mount.HostPath is empty"}),
		NewStep(Step{Name: "exec", Status: Skip, Message: "the container did not start"}),
	}
	r.Diagnosis = []compat.Finding{{Cause: "crictl v1.30.0 does not send CRI Mount.image", Fix: "upgrade cri-tools"}}
	var buf bytes.Buffer
	r.Table(&buf)
	for _, want := range []string{"STEP", "run", "FAIL", "mount.HostPath is empty", "DIAGNOSIS: crictl v1.30.0", "FAIL p: image-volume-lifecycle with cri-o 1.34.0, cri-tools 1.30.0"} {
		if !strings.Contains(buf.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, buf.String())
		}
	}
	path := filepath.Join(t.TempDir(), "junit.xml")
	if err := WriteJUnit(path, r); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	var doc junitSuites
	if err := xml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	s := doc.Suites[0]
	if s.Tests != 3 || s.Failures != 1 || s.Skipped != 1 || s.Cases[1].Failure == nil || !strings.Contains(s.Cases[1].Failure.Message, "upgrade cri-tools") {
		t.Errorf("junit %+v", s)
	}
}

func TestTrim(t *testing.T) {
	long := strings.Repeat("a", 3000) + "END"
	got := Trim(long, 100)
	if len(got) > 110 || !strings.HasSuffix(got, "END") {
		t.Errorf("Trim kept %d bytes", len(got))
	}
}

func TestSummaries(t *testing.T) {
	comps := []Component{{Name: "cri-o", Locked: "1.34.0"}}
	tests := []struct {
		r    Report
		want string
	}{
		{Report{Cell: "c", Test: "t", Verdict: VerdictPass, Components: comps}, "PASS c: t with cri-o 1.34.0"},
		{Report{Cell: "c", Test: "t", Verdict: VerdictReady, Components: comps}, "READY c: cri-o 1.34.0"},
		{Report{Cell: "c", Verdict: VerdictError, Error: "boom\nmore"}, "ERROR c: boom ("},
	}
	for _, tt := range tests {
		if got := tt.r.Summary(); !strings.HasPrefix(got, tt.want) {
			t.Errorf("Summary = %q, want prefix %q", got, tt.want)
		}
	}
}

// TestWorst: how a matrix's cells aggregate into one outcome.
func TestWorst(t *testing.T) {
	pass := &Report{Verdict: VerdictPass}
	ready := &Report{Verdict: VerdictReady}
	fail := &Report{Verdict: VerdictFail}
	infra := &Report{Verdict: VerdictError, ErrorClass: fault.Infra}
	unclassified := &Report{Verdict: VerdictError}
	input := &Report{Verdict: VerdictError, ErrorClass: fault.Input}
	tests := []struct {
		name    string
		reports []*Report
		verdict Verdict
		class   fault.Class
	}{
		{"all pass", []*Report{pass, pass}, VerdictPass, fault.Unclassified},
		{"ready counts as pass", []*Report{ready, pass}, VerdictPass, fault.Unclassified},
		{"a failure", []*Report{pass, fail, pass}, VerdictFail, fault.Unclassified},
		{"could not test beats failed", []*Report{fail, infra, pass}, VerdictError, fault.Infra},
		{"unclassified error is could-not-test", []*Report{fail, unclassified}, VerdictError, fault.Unclassified},
		{"bad input beats everything", []*Report{infra, input, fail}, VerdictError, fault.Input},
		{"none", nil, VerdictPass, fault.Unclassified},
	}
	for _, tt := range tests {
		v, c := Worst(tt.reports)
		if v != tt.verdict || c != tt.class {
			t.Errorf("%s: %s %v, want %s %v", tt.name, v, c, tt.verdict, tt.class)
		}
	}
}

func TestSuitesSideBySide(t *testing.T) {
	step := func(suite Suite, st Status, msg string) Step {
		return Step{Name: "s", Suite: suite, Status: st, Message: msg}
	}
	const skipReason = `requires crictl version "1.31" or newer`
	for _, tc := range []struct {
		name     string
		steps    []Step
		overall  Verdict
		disagree string
	}{
		{"both pass", []Step{step("", Pass, ""), step(SuiteUpstream, Pass, ""), step(SuiteUpstream, Skip, "not enforcing")},
			VerdictPass, ""},
		{"seed: envctl fails, upstream skips all", []Step{step("", Fail, ""), step(SuiteUpstream, Skip, skipReason), step(SuiteUpstream, Skip, skipReason)},
			VerdictFail, ""},
		{"upstream only, all skipped", []Step{step(SuiteUpstream, Skip, skipReason)},
			VerdictNotTested, ""},
		{"envctl passes, upstream fails", []Step{step("", Pass, ""), step(SuiteUpstream, Fail, "")},
			VerdictFail, "envctl PASS, upstream FAIL"},
		{"envctl passes, upstream skips all", []Step{step("", Pass, ""), step(SuiteUpstream, Skip, skipReason)},
			VerdictPass, "envctl PASS, upstream NOT-TESTED"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var suites []SuiteResult
			for _, s := range []Suite{SuiteEnvctl, SuiteUpstream} {
				r := Tally(s, "", tc.steps)
				if r.Passed+r.Failed+r.Skipped > 0 {
					suites = append(suites, r)
				}
			}
			if got := Overall(suites); got != tc.overall {
				t.Errorf("overall %s, want %s (%v)", got, tc.overall, suites)
			}
			if got := Disagree(suites); got != tc.disagree {
				t.Errorf("disagreement %q, want %q", got, tc.disagree)
			}
		})
	}
	r := &Report{Cell: "c", Test: "upstream", Verdict: VerdictNotTested,
		Suites: []SuiteResult{Tally(SuiteUpstream, "oci_volumes.bats", []Step{step(SuiteUpstream, Skip, skipReason)})}}
	if s := r.Summary(); !strings.Contains(s, "NOT TESTED c") || !strings.Contains(s, "upstream skipped: "+skipReason) {
		t.Errorf("summary %q", s)
	}
	if b, err := json.Marshal(r); err != nil || !strings.Contains(string(b), `"summary":"NOT TESTED c`) || !strings.Contains(string(b), `"verdict":"not-tested"`) {
		t.Errorf("json %s %v", b, err)
	}
	if v, _ := Worst([]*Report{r}); v != VerdictNotTested {
		t.Errorf("worst of a not-tested run is %s", v)
	}
}

func TestNewCPUUse(t *testing.T) {
	for _, tc := range []struct {
		name       string
		used, wall time.Duration
		vcpus      int
		want       *CPUUse
	}{
		{"busy", 30 * time.Second, 20 * time.Second, 2, &CPUUse{Seconds: 30, Wall: 20, VCPUs: 2, Busy: 0.75}},
		{"rounded", 1234567 * time.Microsecond, 3 * time.Second, 1, &CPUUse{Seconds: 1.23, Wall: 3, VCPUs: 1, Busy: 0.41}},
		{"no wall time", time.Second, 0, 2, nil},
		{"no vCPUs", time.Second, time.Second, 0, nil},
		{"a counter that went back", -time.Second, time.Second, 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := NewCPUUse(tc.used, tc.wall, tc.vcpus)
			if (got == nil) != (tc.want == nil) || got != nil && *got != *tc.want {
				t.Errorf("NewCPUUse(%s, %s, %d) = %+v, want %+v", tc.used, tc.wall, tc.vcpus, got, tc.want)
			}
		})
	}
}
