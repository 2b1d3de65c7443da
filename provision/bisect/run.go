package bisect

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/cellrun"
	"github.com/envctl/envctl/provision/guest"
	"github.com/envctl/envctl/provision/report"
	"github.com/envctl/envctl/provision/vm"
)

// Runner probes specs with real pipeline runs.
type Runner struct {
	// Base is the profile the specs vary: its image, VM, test and the
	// sources and versions of every role a spec leaves alone.
	Base *profiles.Profile
	Lock cellrun.Locker
	Run  cellrun.Options
	// Ledger finds recent verdicts of cells with the same lock hash.
	Ledger *cellrun.Ledger
	// Command, when set, is the probe (`envctl bisect run`): it runs on
	// this machine while the environment is up, with ENVCTL_ENV set, and
	// its exit status decides as in `git bisect run`.
	Command []string
	// Note prints one line of the probe log; may be nil.
	Note func(format string, args ...any)
}

// Probe is one probe's record.
type Probe struct {
	Index       int            `json:"index"`
	Spec        string         `json:"spec"`
	Outcome     Outcome        `json:"outcome"`
	Verdict     report.Verdict `json:"verdict,omitempty"`
	Cached      bool           `json:"cached,omitempty"`
	ExitStatus  *int           `json:"exit_status,omitempty"`
	FailingStep string         `json:"failing_step,omitempty"`
	Diagnosis   string         `json:"diagnosis,omitempty"`
	Error       string         `json:"error,omitempty"`
	Seconds     float64        `json:"seconds"`
}

// Result is a bisection: the path, every probe, and the answer.
type Result struct {
	Profile  string   `json:"profile"`
	Path     []string `json:"path"`
	Probes   []Probe  `json:"probes"`
	Found    bool     `json:"found"`
	FirstBad string   `json:"first_bad,omitempty"`
	LastGood string   `json:"last_good,omitempty"`
	// Step is the change from the last good to the first bad spec.
	Step        string   `json:"step,omitempty"`
	FailingStep string   `json:"failing_step,omitempty"`
	Diagnosis   string   `json:"diagnosis,omitempty"`
	Candidates  []string `json:"candidates,omitempty"`
	Reason      string   `json:"reason,omitempty"`
	Swapped     bool     `json:"swapped,omitempty"`
	EndsWrong   bool     `json:"ends_wrong,omitempty"`
	Promised    int      `json:"promised_probes"`
	Seconds     float64  `json:"seconds"`
}

// Bisect searches the path with real probes.
func (r *Runner) Bisect(ctx context.Context, path []Spec, trustEndpoints bool) Result {
	start := time.Now()
	res := Result{Profile: r.Base.Name, Promised: MaxProbes(len(path), trustEndpoints)}
	for _, s := range path {
		res.Path = append(res.Path, s.String())
	}
	byIndex := map[int]Probe{}
	s := Bisect(ctx, len(path), func(ctx context.Context, i int) Outcome {
		p := r.probe(ctx, path[i])
		p.Index = i
		byIndex[i] = p
		res.Probes = append(res.Probes, p)
		r.note("probe %d (%d of at most %d): %s → %s%s", i, len(res.Probes), res.Promised, p.Spec, p.Outcome, detail(p))
		return p.Outcome
	}, trustEndpoints)
	res.Found, res.Reason, res.Swapped, res.EndsWrong = s.Found, s.Reason, s.Swapped, s.EndsWrong
	if s.Found {
		res.FirstBad, res.LastGood = path[s.FirstBad].String(), path[s.LastGood].String()
		res.Step = Describe(path[s.LastGood], path[s.FirstBad])
		if bad, ok := byIndex[s.FirstBad]; ok {
			res.FailingStep, res.Diagnosis = bad.FailingStep, bad.Diagnosis
		}
	}
	for _, i := range s.Candidates {
		res.Candidates = append(res.Candidates, path[i].String())
	}
	res.Seconds = time.Since(start).Round(time.Second).Seconds()
	return res
}

func detail(p Probe) string {
	switch {
	case p.Cached:
		return fmt.Sprintf(" (%s: a run with the same lock hash already found this; not run again)", p.Verdict)
	case p.ExitStatus != nil:
		return fmt.Sprintf(" (command exited %d, %.0fs)", *p.ExitStatus, p.Seconds)
	case p.Error != "":
		return " (could not test: " + report.FirstLine(p.Error) + ")"
	case p.Verdict != "":
		return fmt.Sprintf(" (%s, %.0fs)", p.Verdict, p.Seconds)
	}
	return ""
}

func (r *Runner) note(format string, args ...any) {
	if r.Note != nil {
		r.Note(format, args...)
	}
}

func (r *Runner) probeKey() string { return strings.Join(r.Command, "\x00") }

// probe locks a spec as a cell of the base profile and runs it, unless a
// recent verdict for the same lock hash is known.
func (r *Runner) probe(ctx context.Context, spec Spec) Probe {
	p := Probe{Spec: spec.String()}
	start := time.Now()
	cell, err := r.cell(ctx, spec)
	if err != nil {
		p.Outcome, p.Error = Skip, err.Error()
		return p
	}
	key := cellrun.LedgerKey(cell, r.probeKey())
	if v, ok := r.Ledger.Lookup(key); ok {
		p.Cached, p.Verdict, p.FailingStep, p.Diagnosis, p.Seconds = true, v.Verdict, v.FailingStep, v.Diagnosis, v.Seconds
		p.Outcome = map[report.Verdict]Outcome{report.VerdictPass: Good, report.VerdictFail: Bad}[v.Verdict]
		return p
	}
	if len(r.Command) > 0 {
		r.command(ctx, cell, spec, &p)
	} else {
		rep, _ := cellrun.Run(ctx, cell, r.Run)
		fill(&p, rep)
	}
	p.Seconds = time.Since(start).Round(time.Second).Seconds()
	// A pipeline run records itself; a command's verdict is recorded here.
	if len(r.Command) > 0 && (p.Outcome == Good || p.Outcome == Bad) {
		v := report.VerdictPass
		if p.Outcome == Bad {
			v = report.VerdictFail
		}
		_ = r.Ledger.Put(cellrun.Verdict{Key: key, Cell: cell.Name, Verdict: v, Seconds: p.Seconds})
	}
	return p
}

func fill(p *Probe, rep *report.Report) {
	p.Verdict = rep.Verdict
	switch rep.Verdict {
	case report.VerdictPass:
		p.Outcome = Good
	case report.VerdictFail:
		p.Outcome = Bad
	default:
		p.Outcome, p.Error = Skip, rep.Error
		if rep.ErrorClass == fault.Input {
			p.Outcome = Abort
		}
	}
	for _, s := range rep.Steps {
		if s.Status == report.Fail {
			p.FailingStep = s.Name
			break
		}
	}
	if len(rep.Diagnosis) > 0 {
		p.Diagnosis = rep.Diagnosis[0].String()
	}
}

// command runs the probe command while the cell's environment is up.
func (r *Runner) command(ctx context.Context, cell lock.LockedCell, spec Spec, p *Probe) {
	opts := r.Run
	opts.Stop, opts.Keep = cellrun.AfterInstall, true
	// The probe is kept only for as long as this process holds its
	// lease: killed, it leaves an orphan that `envctl gc` removes.
	lease, unlease, err := opts.VM.Store.TakeLease()
	if err != nil {
		p.Outcome, p.Error = Skip, err.Error()
		return
	}
	defer unlease()
	opts.Lease = lease
	rep, err := cellrun.Run(ctx, cell, opts)
	if err != nil || !rep.Kept {
		fill(p, rep)
		if p.Outcome != Abort {
			p.Outcome = Skip
		}
		return
	}
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Minute)
		defer cancel()
		if err := vm.Down(dctx, opts.VM, rep.Env); err != nil {
			r.note("tear down %s: %v", rep.Env, err)
		}
	}()
	cmd := exec.CommandContext(ctx, r.Command[0], r.Command[1:]...)
	cmd.Env = append(os.Environ(), "ENVCTL_ENV="+rep.Env, "ENVCTL_STATE_DIR="+opts.VM.Store.Dir, "ENVCTL_SPEC="+spec.String())
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	err = cmd.Run()
	code := 0
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		p.Outcome, p.Error = Abort, fmt.Sprintf("run %s: %v", guest.CommandLine(r.Command), err)
		return
	}
	p.ExitStatus = &code
	switch {
	case code == 0:
		p.Outcome = Good
	case code == 125:
		p.Outcome = Skip
	case code < 128 && code > 0:
		p.Outcome = Bad
	default:
		p.Outcome = Abort
	}
}

// cell locks a spec as the one cell of a profile derived from the base.
func (r *Runner) cell(ctx context.Context, spec Spec) (lock.LockedCell, error) {
	p := Derive(r.Base, spec)
	f, err := r.Lock(ctx, p)
	if err != nil {
		return lock.LockedCell{}, err
	}
	return f.Cell(p, p.Name)
}

// Derive is the base profile with the spec's versions, and no matrix.
func Derive(base *profiles.Profile, spec Spec) *profiles.Profile {
	p := *base
	p.Matrix = nil
	p.Components = maps.Clone(base.Components)
	for role, v := range spec {
		name, ver := component(role, v)
		c := p.Components[role]
		if role == profiles.RoleRuntime && name != c.Name {
			c.Source = ""
		}
		if role == profiles.RoleRuntime {
			c.Name = name
		}
		if c.Version != ver {
			c.Commit = "" // a commit pins one version's snapshot
		}
		c.Version = ver
		p.Components[role] = c
	}
	p.Path = filepath.Join(filepath.Dir(base.Path), "."+base.Name+"-bisect.yaml")
	return &p
}

// BaseSpec is the profile's own pins, resolved, for the given roles.
func BaseSpec(cat *catalog.Catalog, p *profiles.Profile, roles []profiles.Role) (Spec, error) {
	out := Spec{}
	for _, role := range roles {
		c, ok := p.Components[role]
		if !ok {
			return nil, fault.Inputf("%s does not pin %s", p.Path, role)
		}
		res, err := profiles.ResolveComponent(cat, p, role, c)
		if err != nil {
			return nil, fault.Inputf("%s: %v", p.Path, err)
		}
		out[role] = res.Version
		if role == profiles.RoleRuntime {
			out[role] = res.Name + "@" + res.Version
		}
	}
	return out, nil
}

// WriteTable prints the answer for humans.
func (res Result) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROBE\tSPEC\tOUTCOME\tDETAIL")
	for _, p := range res.Probes {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\n", p.Index, p.Spec, p.Outcome, strings.TrimSpace(strings.Trim(detail(p), " ()")))
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\n%d probes (at most %d promised without skips) in %.0fs over a path of %d specs\n", len(res.Probes), res.Promised, res.Seconds, len(res.Path))
	if !res.Found {
		fmt.Fprintf(w, "no culprit found: %s\n", res.Reason)
		for _, c := range res.Candidates {
			fmt.Fprintf(w, "  candidate first bad: %s\n", c)
		}
		return
	}
	fmt.Fprintf(w, "first bad: %s\nlast good: %s\nthe step:  %s\n", res.FirstBad, res.LastGood, res.Step)
	if res.FailingStep != "" {
		fmt.Fprintf(w, "failing step: %s\n", res.FailingStep)
	}
	if res.Diagnosis != "" {
		fmt.Fprintf(w, "DIAGNOSIS: %s\n", res.Diagnosis)
	}
}
