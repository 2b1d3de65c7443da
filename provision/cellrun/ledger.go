package cellrun

import (
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/gofrs/flock"

	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/report"
)

// Ledger remembers recent verdicts by cell lock hash, so that a cell that
// already ran with exactly the same lock (image and every artifact) need
// not run again: bisect probes reuse what a matrix or an earlier bisect
// found. It is a JSON file in the state directory, locked while written.
type Ledger struct {
	Path   string
	MaxAge time.Duration
}

// Verdict is one remembered outcome.
type Verdict struct {
	Key         string         `json:"key"`
	Cell        string         `json:"cell"`
	Verdict     report.Verdict `json:"verdict"`
	When        time.Time      `json:"when"`
	Seconds     float64        `json:"seconds"`
	FailingStep string         `json:"failing_step,omitempty"`
	Diagnosis   string         `json:"diagnosis,omitempty"`
}

// LedgerKey identifies what a verdict depends on: the cell's lock hash,
// its test, and a probe command if one decided it.
func LedgerKey(cell lock.LockedCell, probe string) string {
	return cell.Hash + "|" + string(cell.Test) + "|" + probe
}

func (l *Ledger) read() map[string]Verdict {
	out := map[string]Verdict{}
	b, err := os.ReadFile(l.Path)
	if err == nil {
		_ = json.Unmarshal(b, &out)
	}
	return out
}

// Lookup returns a verdict recorded for key within MaxAge.
func (l *Ledger) Lookup(key string) (Verdict, bool) {
	if l == nil {
		return Verdict{}, false
	}
	v, ok := l.read()[key]
	if !ok || (l.MaxAge > 0 && time.Since(v.When) > l.MaxAge) {
		return Verdict{}, false
	}
	return v, true
}

// Record remembers a run's verdict; a pass or a fail only, since an error
// says nothing about the stack.
func (l *Ledger) Record(key string, r *report.Report) error {
	if l == nil || (r.Verdict != report.VerdictPass && r.Verdict != report.VerdictFail) {
		return nil
	}
	v := Verdict{Key: key, Cell: r.Cell, Verdict: r.Verdict, Seconds: r.Seconds}
	for _, s := range r.Steps {
		if s.Status == report.Fail {
			v.FailingStep = s.Name
			break
		}
	}
	if len(r.Diagnosis) > 0 {
		v.Diagnosis = r.Diagnosis[0].String()
	}
	return l.Put(v)
}

// Put remembers a verdict under its key, now.
func (l *Ledger) Put(v Verdict) error {
	if l == nil {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(l.Path), 0o755); err != nil {
		return err
	}
	fl := flock.New(l.Path + ".lock")
	if err := fl.Lock(); err != nil {
		return err
	}
	defer func() { _ = fl.Unlock() }()
	all := l.read()
	v.When = time.Now().UTC()
	all[v.Key] = v
	for k, old := range all {
		if l.MaxAge > 0 && time.Since(old.When) > 4*l.MaxAge {
			delete(all, k)
		}
	}
	b, _ := json.MarshalIndent(all, "", "  ")
	tmp := l.Path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	if err := os.Rename(tmp, l.Path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}
