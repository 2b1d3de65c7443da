package cellrun

import (
	"strings"
	"time"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/compat"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/report"
)

// report assembles the report from what the phases produced.
func (r *run) report() *report.Report {
	rep := &report.Report{SchemaVersion: report.SchemaVersion,
		Profile: r.cell.Profile, Cell: r.cell.Name, Test: r.cell.Test, Host: r.opts.VM.URI,
		Started: r.start.UTC(), Warnings: r.warnings, Phases: r.phases, Results: r.results, Kept: r.kept,
		Steps: r.steps(), Notes: r.notes, Image: r.opts.Image, VerifiedBy: string(r.proof),
		TestCPU: r.testCPU,
	}
	if st := r.started; st != nil {
		rep.Env, rep.Accel, rep.Start = st.Env, st.Accel, st.Why
	}
	for _, c := range r.cell.Components {
		rc := report.Component{Role: c.Role, Name: c.Component, Locked: c.Version, Source: c.Source, Label: c.Label()}
		for _, b := range r.builds {
			if b.Component == c.Component && b.CRIAPI != "" && rc.CRIAPI == "" {
				rc.CRIAPI = strings.Fields(b.CRIAPI)[0]
			}
		}
		for _, it := range r.verified {
			if it.Role == c.Role {
				rc.Actual, rc.Verified, rc.Commit = it.Actual, it.OK, it.Commit
			}
		}
		rep.Components = append(rep.Components, rc)
	}
	switch {
	case r.err != nil:
		rep.Verdict, rep.Error, rep.ErrorClass = report.VerdictError, r.err.Error(), fault.ClassOf(r.err)
		if rep.ErrorClass == fault.Unclassified {
			rep.ErrorClass = fault.Infra
		}
	case !r.tested:
		rep.Verdict = report.VerdictReady
	default:
		rep.Suites = r.suites()
		rep.Verdict, rep.Disagreement = report.Overall(rep.Suites), report.Disagree(rep.Suites)
		rep.Diagnosis = r.diagnose(rep.Verdict)
	}
	rep.Seconds = time.Since(r.start).Round(100 * time.Millisecond).Seconds()
	rep.VerdictSeconds = r.said.Round(10 * time.Millisecond).Seconds()
	return rep
}

// diagnose explains a run that did not pass: the predicted findings whose
// symptom the failed steps show, and, when every test was skipped, the
// stack's own predicted incompatibilities next to upstream's reason.
func (r *run) diagnose(v report.Verdict) []compat.Finding {
	switch v {
	case report.VerdictFail:
		var outs []string
		for _, s := range r.steps() {
			if s.Status == report.Fail {
				outs = append(outs, s.Output, s.Message)
			}
		}
		return compat.Diagnose(strings.Join(outs, "\n"), r.warnings)
	case report.VerdictNotTested:
		var out []compat.Finding
		for _, w := range r.warnings {
			if !w.Skips {
				out = append(out, w)
			}
		}
		return out
	}
	return nil
}

// ErrorReport is the report of a cell that could not run at all.
func ErrorReport(cell lock.LockedCell, err error) *report.Report {
	r := &run{cell: cell, start: time.Now(), err: err}
	return r.report()
}
