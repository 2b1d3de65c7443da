package main

import (
	"context"
	"fmt"
	"time"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/fault"
	"github.com/envctl/envctl/provision/report"
)

// runCell runs one cell of a locked profile end to end and returns its
// report. The error is nil on a pass; a failed test gives exit 1.
func (a *app) runCell(ctx context.Context, p *profiles.Profile, lf *lock.File, cell string, f *upFlags) (*report.Report, error) {
	start := time.Now()
	rep := &report.Report{Profile: p.Name, Cell: cell, Test: p.Test, Started: start.UTC()}
	if _, err := lf.CellArtifacts(cell); err != nil {
		return nil, err
	}
	finishErr := func(err error) (*report.Report, error) {
		rep.Seconds = time.Since(start).Round(100 * time.Millisecond).Seconds()
		if err != nil && rep.Verdict == "" {
			rep.Verdict, rep.Error = report.VerdictError, err.Error()
		}
		return rep, err
	}
	var prep *prepared
	if !f.noInstall {
		var err error
		prep, err = a.prepareCell(ctx, p, lf, cell, f, rep)
		rep.Phase("fetch", time.Since(start))
		if err != nil {
			return finishErr(err)
		}
	}
	m, err := a.bootCell(ctx, p, lf, cell, &f.vmFlags, f.testImage == "upstream")
	if m != nil {
		rep.Env, rep.Accel = m.Env.ID, m.Env.Accel
		for k, v := range m.Timings {
			rep.Phase(k, v)
		}
	}
	if err != nil {
		return finishErr(err)
	}
	var runErr error
	if prep != nil {
		runErr = a.installAndTest(ctx, m, p, prep, f, rep)
	}
	if runErr == nil && rep.Verdict == "" {
		rep.Verdict = report.VerdictReady
	}
	keep := f.keep && ctx.Err() == nil
	if err := a.finish(m, keep); err != nil {
		if runErr == nil {
			runErr = err
		} else {
			a.log.Warn("teardown", "env", m.Env.ID, "err", err)
		}
	}
	rep.Kept = keep
	if t, ok := m.Timings["teardown"]; ok {
		rep.Phase("teardown", t)
	}
	if ctx.Err() != nil && runErr == nil {
		runErr = fault.Infraf("interrupted: %v (the VM was torn down)", ctx.Err())
	}
	rep, err = finishErr(runErr)
	if err == nil && rep.Verdict == report.VerdictFail {
		err = &fault.Error{Kind: fault.TestFailed, Err: fmt.Errorf("-test failed")}
	}
	return rep, err
}

// printReport renders a report on stdout and writes JUnit when asked.
func (a *app) printReport(r *report.Report) error {
	return a.emit(r, r.Table)
}
