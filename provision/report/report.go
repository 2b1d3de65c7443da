package report

import (
	"cmp"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/compat"
)

// Status is a step's outcome.
type Status string

// The step statuses.
const (
	Pass Status = "pass"
	Fail Status = "fail"
	Skip Status = "skip"
)

// Verdict is a run's outcome.
type Verdict string

// The verdicts.
const (
	VerdictPass  Verdict = "pass"
	VerdictFail  Verdict = "fail"
	VerdictError Verdict = "error" // could not test: see the error and its class
	VerdictReady Verdict = "ready" // booted (and installed) without a test
	// VerdictNotTested: the test ran, but every test the profile asked for
	// was skipped (upstream's helpers gate on versions). A skip is not a
	// pass: it exits 1, like a failed test.
	VerdictNotTested Verdict = "not-tested"
)

// Suite names the test suite a step belongs to.
type Suite string

// The suites.
const (
	SuiteEnvctl   Suite = "envctl"   // envctl's own image-volume steps
	SuiteUpstream Suite = "upstream" // CRI-O's own bats file
)

// SuiteResult is one suite's outcome within a run.
type SuiteResult struct {
	Suite   Suite   `json:"suite"`
	File    string  `json:"file,omitempty"`
	Verdict Verdict `json:"verdict"`
	Passed  int     `json:"passed"`
	Failed  int     `json:"failed"`
	Skipped int     `json:"skipped"`
	// Skips are the skip reasons, as the suite gave them.
	Skips []string `json:"skips,omitempty"`
	// Seconds is the suite's wall time.
	Seconds float64 `json:"seconds"`
}

// Tally counts a suite's steps and gives its verdict: fail if any step
// failed, not tested if every step was skipped, else pass.
func Tally(suite Suite, file string, steps []Step) SuiteResult {
	r := SuiteResult{Suite: suite, File: file, Verdict: VerdictPass}
	for _, s := range steps {
		if cmp.Or(s.Suite, SuiteEnvctl) != suite {
			continue
		}
		r.Seconds += s.Seconds
		switch s.Status {
		case Pass:
			r.Passed++
		case Fail:
			r.Failed++
		case Skip:
			r.Skipped++
			if s.Message != "" && !slices.Contains(r.Skips, s.Message) {
				r.Skips = append(r.Skips, s.Message)
			}
		}
	}
	switch {
	case r.Failed > 0:
		r.Verdict = VerdictFail
	case r.Passed == 0:
		r.Verdict = VerdictNotTested
	}
	return r
}

func (s SuiteResult) String() string {
	out := fmt.Sprintf("%s %s (%d passed, %d failed, %d skipped)", s.Suite, strings.ToUpper(string(s.Verdict)), s.Passed, s.Failed, s.Skipped)
	if len(s.Skips) > 0 {
		out += "; skipped because: " + strings.Join(s.Skips, "; ")
	}
	return out
}

// Step is one test step.
type Step struct {
	Name     string        `json:"name"`
	Status   Status        `json:"status"`
	Duration time.Duration `json:"-"`
	Seconds  float64       `json:"seconds"`
	Command  string        `json:"command,omitempty"`
	Output   string        `json:"output,omitempty"`
	Message  string        `json:"message,omitempty"`
	// Suite is the suite the step belongs to ("" is envctl's own).
	Suite Suite `json:"suite,omitempty"`
}

// NewStep records a step, rounding its time and trimming its output.
func NewStep(s Step) Step {
	s.Seconds = s.Duration.Round(10 * time.Millisecond).Seconds()
	s.Output = Trim(s.Output, 1500)
	return s
}

// Component is a component as locked, installed and verified.
type Component struct {
	Role     profiles.Role   `json:"role"`
	Name     string          `json:"name"`
	Locked   string          `json:"locked"`
	Actual   string          `json:"actual,omitempty"`
	Source   profiles.Source `json:"source"`
	Verified bool            `json:"verified"`
	CRIAPI   string          `json:"cri_api,omitempty"`
	// Label is the locked version as people should read it (a module
	// snapshot whose tag moved says so); Commit is the source commit the
	// installed binary reports.
	Label  string `json:"label,omitempty"`
	Commit string `json:"commit,omitempty"`
}

// Phase is one phase of a run and its wall time.
type Phase struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
}

// SchemaVersion is the version of the report's JSON shape: it grows
// when a field changes meaning or goes away (new fields do not change it).
const SchemaVersion = 1

// Report is the result of one run of one cell.
type Report struct {
	SchemaVersion int               `json:"schema_version"`
	Profile       string            `json:"profile"`
	Cell          string            `json:"cell"`
	Env           string            `json:"env,omitempty"`
	Host          string            `json:"host,omitempty"`
	Test          profiles.TestName `json:"test"`
	Accel         string            `json:"accel,omitempty"`
	Verdict       Verdict           `json:"verdict"`
	Error         string            `json:"error,omitempty"`
	ErrorClass    fault.Class       `json:"error_class,omitempty"`
	Components    []Component       `json:"components,omitempty"`
	Steps         []Step            `json:"steps,omitempty"`
	// Suites are the suites that ran, side by side; Disagreement says how
	// they disagree, when they do (one passed where the other failed).
	Suites       []SuiteResult    `json:"suites,omitempty"`
	Disagreement string           `json:"disagreement,omitempty"`
	Diagnosis    []compat.Finding `json:"diagnosis,omitempty"`
	Warnings     []compat.Finding `json:"warnings,omitempty"`
	Phases       []Phase          `json:"phases,omitempty"`
	Results      string           `json:"results_dir,omitempty"`
	Notes        []string         `json:"notes,omitempty"`
	// Start says how the guest came up: "warm: …" (a restored saved
	// state), "post-boot: …" (restored from the state just after boot
	// that the cells of one image and VM shape share, then installed) or
	// "cold: …", with the reason.
	Start string `json:"start,omitempty"`
	// VerifiedBy says how the drift check knew the installed files were
	// the locked ones: "digests" (taken in the guest) or "seal" (a
	// restored state whose digests were taken before it was saved).
	VerifiedBy string `json:"verified_by,omitempty"`
	// Image is the base image the run booted and where this machine got
	// it: the cache, the image store, a build (reproducing the lock's pin,
	// or re-pinning it, with the packages that moved), or a download.
	Image   *images.Obtained `json:"image,omitempty"`
	Kept    bool             `json:"kept,omitempty"`
	Started time.Time        `json:"started"`
	Seconds float64          `json:"seconds"`
	// VerdictSeconds is when the verdict was said (on stderr, before the
	// teardown), from the start: what a developer waits for. Seconds is
	// the whole run, teardown included. 0 when no test ran.
	VerdictSeconds float64 `json:"verdict_seconds,omitempty"`
	// TestCPU is how busy the guest was while envctl's own test ran, as
	// the hypervisor counts it; absent when it could not say.
	TestCPU *CPUUse `json:"test_cpu,omitempty"`
}

// CPUUse is the CPU time a guest used over a span of wall time.
type CPUUse struct {
	// Seconds is the CPU time: every vCPU, and the hypervisor's own
	// threads for the guest.
	Seconds float64 `json:"seconds"`
	// Wall is the span's length in seconds.
	Wall  float64 `json:"wall"`
	VCPUs int     `json:"vcpus"`
	// Busy is Seconds over VCPUs × Wall: near 1, the guest's vCPUs were
	// the limit, and running more at once cannot make it faster.
	Busy float64 `json:"busy"`
}

// NewCPUUse rounds a measurement for the report.
func NewCPUUse(used, wall time.Duration, vcpus int) *CPUUse {
	if wall <= 0 || vcpus <= 0 || used < 0 {
		return nil
	}
	busy := used.Seconds() / (float64(vcpus) * wall.Seconds())
	return &CPUUse{Seconds: used.Round(10 * time.Millisecond).Seconds(), Wall: wall.Round(10 * time.Millisecond).Seconds(),
		VCPUs: vcpus, Busy: math.Round(busy*100) / 100}
}

// Phase returns a phase's seconds (0 when it did not run).
func (r *Report) Phase(name string) float64 {
	for _, p := range r.Phases {
		if p.Name == name {
			return p.Seconds
		}
	}
	return 0
}

// Failed reports whether any step failed.
func (r *Report) Failed() bool {
	for _, s := range r.Steps {
		if s.Status == Fail {
			return true
		}
	}
	return false
}

// Passed counts the steps that passed.
func (r *Report) Passed() int {
	n := 0
	for _, s := range r.Steps {
		if s.Status == Pass {
			n++
		}
	}
	return n
}

// Versions prints "cri-o 1.34.0, cri-tools 1.30.0, runc 1.3.6".
func (r *Report) Versions() string {
	parts := make([]string, len(r.Components))
	for i, c := range r.Components {
		parts[i] = c.Name + " " + cmp.Or(c.Actual, c.Locked)
	}
	return strings.Join(parts, ", ")
}

// Trim keeps the head and tail of long output.
func Trim(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) <= n {
		return s
	}
	return s[:n/2] + "\n…\n" + s[len(s)-n/2:]
}

// Table writes the human step table and the one-line verdict.
func (r *Report) Table(w io.Writer) {
	if im := r.Image; im != nil {
		line := fmt.Sprintf("IMAGE %s %s from %s", im.Name, im.Digest, im.From)
		if im.Detail != "" {
			line += " (" + im.Detail + ")"
		}
		if im.Repin != nil {
			line += fmt.Sprintf("; re-pinned from %s, %d packages moved", im.Repin.Was, len(im.Repin.Moved))
		}
		fmt.Fprintln(w, line)
	}
	if len(r.Components) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "COMPONENT\tLOCKED\tINSTALLED\tCOMMIT\tSOURCE\tCRI-API")
		for _, c := range r.Components {
			actual := cmp.Or(c.Actual, "-")
			if c.Verified {
				actual += " ✓"
			}
			commit := c.Commit
			if len(commit) > 12 {
				commit = commit[:12]
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, cmp.Or(c.Label, c.Locked), actual, cmp.Or(commit, "-"), c.Source, cmp.Or(c.CRIAPI, "-"))
		}
		_ = tw.Flush()
		fmt.Fprintln(w)
	}
	if len(r.Steps) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SUITE\tSTEP\tSTATUS\tTIME\tDETAIL")
		for _, s := range r.Steps {
			detail := s.Message
			if detail == "" && s.Status == Fail {
				detail = FirstLine(s.Output)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%.1fs\t%s\n", cmp.Or(s.Suite, SuiteEnvctl), s.Name, strings.ToUpper(string(s.Status)), s.Seconds, detail)
		}
		_ = tw.Flush()
		fmt.Fprintln(w)
	}
	if len(r.Suites) > 1 || len(r.Suites) == 1 && r.Suites[0].Suite != SuiteEnvctl {
		for _, s := range r.Suites {
			fmt.Fprintf(w, "SUITE: %s\n", s)
		}
	}
	for _, d := range r.Diagnosis {
		fmt.Fprintf(w, "DIAGNOSIS: %s\n", d)
	}
	if r.Results != "" {
		fmt.Fprintf(w, "logs kept in %s\n", r.Results)
	}
	if r.Kept && r.Env != "" {
		fmt.Fprintf(w, "VM kept: `envctl ssh %s` to log in, `envctl logs %s` for its logs, `envctl ssh-config %s` for OpenSSH, `envctl down %s` to remove it\n", r.Env, r.Env, r.Env, r.Env)
	}
	fmt.Fprintln(w, r.Summary())
}

// Summary is the one-line verdict.
func (r *Report) Summary() string {
	switch r.Verdict {
	case VerdictPass:
		return fmt.Sprintf("PASS %s: %s with %s%s (%.0fs)", r.Cell, r.Test, r.Versions(), r.suiteNote(), r.Seconds)
	case VerdictFail:
		return fmt.Sprintf("FAIL %s: %s with %s%s (%.0fs)", r.Cell, r.Test, r.Versions(), r.suiteNote(), r.Seconds)
	case VerdictReady:
		return fmt.Sprintf("READY %s: %s (%.0fs)", r.Cell, r.Versions(), r.Seconds)
	case VerdictNotTested:
		why := ""
		for _, s := range r.Suites {
			if s.Verdict == VerdictNotTested && len(s.Skips) > 0 {
				why += "; " + string(s.Suite) + " skipped: " + strings.Join(s.Skips, "; ")
			}
		}
		if len(r.Diagnosis) > 0 {
			why += "; envctl: " + r.Diagnosis[0].Cause
		}
		return fmt.Sprintf("NOT TESTED %s: %s with %s: every test was skipped%s (%.0fs)", r.Cell, r.Test, r.Versions(), why, r.Seconds)
	}
	return fmt.Sprintf("ERROR %s: %s (%.0fs)", r.Cell, FirstLine(r.Error), r.Seconds)
}

// suiteNote flags a disagreement between the suites in the verdict line.
func (r *Report) suiteNote() string {
	if r.Disagreement != "" {
		return " — SUITES DISAGREE: " + r.Disagreement
	}
	return ""
}

// MarshalJSON adds the one-line verdict ("summary") to the report's JSON,
// so that CI logs read the same as a terminal.
func (r *Report) MarshalJSON() ([]byte, error) {
	type plain Report
	return json.Marshal(struct {
		*plain
		Summary string `json:"summary"`
	}{(*plain)(r), r.Summary()})
}

// FirstLine returns s's first line, shortened to 160 characters.
func FirstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

type junitSuites struct {
	XMLName xml.Name     `xml:"testsuites"`
	Suites  []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Errors   int         `xml:"errors,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Time     float64     `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      float64       `xml:"time,attr"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Error     *junitMessage `xml:"error,omitempty"`
	Skipped   *junitMessage `xml:"skipped,omitempty"`
	SystemOut string        `xml:"system-out,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Text    string `xml:",chardata"`
}

// WriteJUnit writes the reports as JUnit XML: one testsuite per report,
// one testcase per step.
func WriteJUnit(path string, reports ...*Report) error {
	var doc junitSuites
	for _, r := range reports {
		s := junitSuite{Name: r.Cell + " " + string(r.Test), Time: r.Seconds}
		for _, st := range r.Steps {
			c := junitCase{Name: st.Name, Classname: r.Cell, Time: st.Seconds, SystemOut: "$ " + st.Command + "\n" + st.Output}
			switch st.Status {
			case Fail:
				msg := cmp.Or(st.Message, FirstLine(st.Output))
				for _, d := range r.Diagnosis {
					msg += " — " + d.String()
				}
				c.Failure = &junitMessage{Message: msg, Text: st.Output}
				s.Failures++
			case Skip:
				c.Skipped = &junitMessage{Message: st.Message}
				s.Skipped++
			}
			s.Cases = append(s.Cases, c)
		}
		if r.Verdict == VerdictError {
			s.Cases = append(s.Cases, junitCase{Name: "setup", Classname: r.Cell, Error: &junitMessage{Message: FirstLine(r.Error), Text: r.Error}})
			s.Errors++
		}
		s.Tests = len(s.Cases)
		doc.Suites = append(doc.Suites, s)
	}
	b, err := xml.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(path, append([]byte(xml.Header), b...), 0o644); err != nil {
		return fault.Infraf("write JUnit report %s: %w", path, err)
	}
	return nil
}

// Worst aggregates the verdicts of several runs, as a matrix does: a run
// that could not test outranks a failed test, which outranks a pass; bad
// input outranks everything. It returns the verdict and, for an error, its
// class.
func Worst(reports []*Report) (Verdict, fault.Class) {
	v, c := VerdictPass, fault.Unclassified
	rank := func(v Verdict, c fault.Class) int {
		switch {
		case v == VerdictError && c == fault.Input:
			return 3
		case v == VerdictError:
			return 2
		case v == VerdictFail || v == VerdictNotTested:
			return 1
		}
		return 0
	}
	for _, r := range reports {
		if rank(r.Verdict, r.ErrorClass) > rank(v, c) {
			v, c = r.Verdict, r.ErrorClass
		}
	}
	return v, c
}

// WriteMatrix prints one line per cell: verdict, steps passed, time and
// the first diagnosis or error.
func WriteMatrix(w io.Writer, reports []*Report) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CELL\tVERDICT\tPASSED\tTIME\tDIAGNOSIS")
	for _, r := range reports {
		diag := ""
		if len(r.Diagnosis) > 0 {
			diag = r.Diagnosis[0].Cause
		} else if r.Error != "" {
			diag = FirstLine(r.Error)
		}
		fmt.Fprintf(tw, "%s\t%s\t%d/%d\t%.0fs\t%s\n", r.Cell, strings.ToUpper(string(r.Verdict)), r.Passed(), len(r.Steps), r.Seconds, diag)
	}
	_ = tw.Flush()
}

// Disagree compares suites that ran side by side. One passing where
// another fails, or testing where another skipped everything, is a
// disagreement: one of the two suites is wrong about the stack.
func Disagree(suites []SuiteResult) string {
	for i, a := range suites {
		for _, b := range suites[i+1:] {
			if a.Verdict == b.Verdict {
				continue
			}
			if a.Verdict == VerdictPass || b.Verdict == VerdictPass {
				return fmt.Sprintf("%s %s, %s %s", a.Suite, strings.ToUpper(string(a.Verdict)), b.Suite, strings.ToUpper(string(b.Verdict)))
			}
		}
	}
	return ""
}

// Overall is the verdict of suites that ran together: a failure in any
// fails the run; every suite skipping everything is "not tested".
func Overall(suites []SuiteResult) Verdict {
	v := VerdictNotTested
	for _, s := range suites {
		switch s.Verdict {
		case VerdictFail:
			return VerdictFail
		case VerdictPass:
			v = VerdictPass
		}
	}
	return v
}
