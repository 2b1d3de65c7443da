package bats

import (
	"bufio"
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/envctl/envctl/provision/report"
)

// TAP is a parsed TAP stream (the Test Anything Protocol bats prints with
// --tap): the plan, each test's result, and a bail-out if there was one.
type TAP struct {
	// Planned is the plan line's count (1..N); -1 when there was none.
	Planned int
	Tests   []Result
	// BailOut is the reason of a "Bail out!" line.
	BailOut string
}

// Result is one test line and the diagnostics that follow it.
type Result struct {
	Number int
	Name   string
	Status report.Status
	// Reason is a skip's reason ("# skip REASON").
	Reason string
	// Output is the "# " diagnostic lines after the test line (bats puts a
	// failed test's output there).
	Output string
}

var (
	planRE = regexp.MustCompile(`^1\.\.(\d+)\s*$`)
	testRE = regexp.MustCompile(`^(not ok|ok)\s+(\d+)\s*(?:-\s*)?(.*?)\s*$`)
	skipRE = regexp.MustCompile(`(?i)\s*#\s*skip\b:?\s*(.*)$`)
)

// ParseTAP reads bats' TAP output. Lines that are not TAP are ignored, as
// TAP consumers must.
func ParseTAP(out string) TAP {
	t := TAP{Planned: -1}
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		line := strings.TrimRight(sc.Text(), "\r")
		switch {
		case planRE.MatchString(line):
			n, _ := strconv.Atoi(planRE.FindStringSubmatch(line)[1])
			t.Planned = n
		case strings.HasPrefix(line, "Bail out!"):
			t.BailOut = strings.TrimSpace(strings.TrimPrefix(line, "Bail out!"))
		case testRE.MatchString(line):
			m := testRE.FindStringSubmatch(line)
			n, _ := strconv.Atoi(m[2])
			r := Result{Number: n, Name: m[3], Status: report.Pass}
			if m[1] == "not ok" {
				r.Status = report.Fail
			}
			if s := skipRE.FindStringSubmatchIndex(r.Name); s != nil {
				r.Reason = strings.TrimSpace(r.Name[s[2]:s[3]])
				r.Name = strings.TrimSpace(r.Name[:s[0]])
				r.Status = report.Skip
			}
			t.Tests = append(t.Tests, r)
		case strings.HasPrefix(line, "#") && len(t.Tests) > 0:
			last := &t.Tests[len(t.Tests)-1]
			last.Output += strings.TrimPrefix(strings.TrimPrefix(line, "#"), " ") + "\n"
		}
	}
	return t
}

// Complete reports whether every planned test reported, with no bail-out.
func (t TAP) Complete() error {
	switch {
	case t.BailOut != "":
		return fmt.Errorf("bats bailed out: %s", t.BailOut)
	case t.Planned < 0:
		return fmt.Errorf("bats printed no plan line (1..N): it did not run")
	case len(t.Tests) != t.Planned:
		return fmt.Errorf("bats planned %d tests and reported %d", t.Planned, len(t.Tests))
	}
	return nil
}

// AllSkipped reports whether there were tests and every one was skipped.
func (t TAP) AllSkipped() bool {
	for _, r := range t.Tests {
		if r.Status != report.Skip {
			return false
		}
	}
	return len(t.Tests) > 0
}
