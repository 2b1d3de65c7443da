package report

import (
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/envctl/envctl/profiles/compat"
)

// Step statuses.
const (
	Pass = "pass"
	Fail = "fail"
	Skip = "skip"
)

// Verdicts.
const (
	VerdictPass  = "pass"
	VerdictFail  = "fail"
	VerdictError = "error"
	VerdictReady = "ready" // booted (and installed) without a test
)

// Step is one test step.
type Step struct {
	Name     string        `json:"name"`
	Status   string        `json:"status"`
	Duration time.Duration `json:"-"`
	Seconds  float64       `json:"seconds"`
	Command  string        `json:"command,omitempty"`
	Output   string        `json:"output,omitempty"`
	Message  string        `json:"message,omitempty"`
}

// Component is a component as installed and verified in the guest.
type Component struct {
	Role     string `json:"role"`
	Name     string `json:"name"`
	Locked   string `json:"locked"`
	Actual   string `json:"actual,omitempty"`
	Source   string `json:"source"`
	Verified bool   `json:"verified"`
	CRIAPI   string `json:"cri_api,omitempty"`
}

// Report is the result of one run.
type Report struct {
	Profile    string             `json:"profile"`
	Cell       string             `json:"cell"`
	Env        string             `json:"env,omitempty"`
	Test       string             `json:"test"`
	Accel      string             `json:"accel,omitempty"`
	Verdict    string             `json:"verdict"`
	Error      string             `json:"error,omitempty"`
	Components []Component        `json:"components,omitempty"`
	Steps      []Step             `json:"steps,omitempty"`
	Diagnosis  []compat.Finding   `json:"diagnosis,omitempty"`
	Warnings   []compat.Finding   `json:"warnings,omitempty"`
	Phases     map[string]float64 `json:"phases_seconds,omitempty"`
	Results    string             `json:"results_dir,omitempty"`
	Kept       bool               `json:"kept,omitempty"`
	Started    time.Time          `json:"started"`
	Seconds    float64            `json:"seconds"`
}

// Add records a step.
func (r *Report) Add(s Step) {
	s.Seconds = s.Duration.Round(10 * time.Millisecond).Seconds()
	s.Output = Trim(s.Output, 1500)
	r.Steps = append(r.Steps, s)
}

// Phase records the wall time of a phase of `up`.
func (r *Report) Phase(name string, d time.Duration) {
	if r.Phases == nil {
		r.Phases = map[string]float64{}
	}
	r.Phases[name] = d.Round(10 * time.Millisecond).Seconds()
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

// Versions prints "cri-o 1.34.0, cri-tools 1.30.0, runc 1.3.6".
func (r *Report) Versions() string {
	var parts []string
	for _, c := range r.Components {
		v := c.Locked
		if c.Actual != "" {
			v = c.Actual
		}
		parts = append(parts, c.Name+" "+v)
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
	if len(r.Components) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "COMPONENT\tLOCKED\tINSTALLED\tSOURCE\tCRI-API")
		for _, c := range r.Components {
			actual := c.Actual
			if actual == "" {
				actual = "-"
			} else if c.Verified {
				actual += " ✓"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", c.Name, c.Locked, actual, c.Source, dash(c.CRIAPI))
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	if len(r.Steps) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "STEP\tSTATUS\tTIME\tDETAIL")
		for _, s := range r.Steps {
			detail := s.Message
			if detail == "" && s.Status == Fail {
				detail = firstLine(s.Output)
			}
			fmt.Fprintf(tw, "%s\t%s\t%.1fs\t%s\n", s.Name, strings.ToUpper(s.Status), s.Seconds, detail)
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	for _, d := range r.Diagnosis {
		fmt.Fprintf(w, "DIAGNOSIS: %s\n", d)
	}
	if r.Results != "" {
		fmt.Fprintf(w, "logs kept in %s\n", r.Results)
	}
	fmt.Fprintln(w, r.Summary())
}

// Summary is the one-line verdict.
func (r *Report) Summary() string {
	switch r.Verdict {
	case VerdictPass:
		return fmt.Sprintf("PASS %s: %s with %s (%.0fs)", r.Cell, r.Test, r.Versions(), r.Seconds)
	case VerdictFail:
		return fmt.Sprintf("FAIL %s: %s with %s (%.0fs)", r.Cell, r.Test, r.Versions(), r.Seconds)
	case VerdictReady:
		return fmt.Sprintf("READY %s: %s (%.0fs)", r.Cell, r.Versions(), r.Seconds)
	}
	return fmt.Sprintf("ERROR %s: %s (%.0fs)", r.Cell, firstLine(r.Error), r.Seconds)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	if len(s) > 160 {
		s = s[:157] + "..."
	}
	return s
}

func dash(s string) string {
	if s == "" {
		return "-"
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

// WriteJUnit writes the reports as JUnit XML, one testcase per step.
func WriteJUnit(path string, reports ...*Report) error {
	var doc junitSuites
	for _, r := range reports {
		s := junitSuite{Name: r.Cell + " " + r.Test, Time: r.Seconds}
		for _, st := range r.Steps {
			c := junitCase{Name: st.Name, Classname: r.Cell, Time: st.Seconds, SystemOut: "$ " + st.Command + "\n" + st.Output}
			switch st.Status {
			case Fail:
				msg := st.Message
				if msg == "" {
					msg = firstLine(st.Output)
				}
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
			s.Cases = append(s.Cases, junitCase{Name: "setup", Classname: r.Cell, Error: &junitMessage{Message: firstLine(r.Error), Text: r.Error}})
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
		return fmt.Errorf("write JUnit report %s: %w", path, err)
	}
	return nil
}
