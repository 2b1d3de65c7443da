package crio

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"strings"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/provision/guest"
)

// FileCheck is one installed file's digest against the one it must have.
type FileCheck struct {
	Path   string `json:"path"`
	Locked string `json:"locked_sha256"`
	Actual string `json:"actual_sha256"`
}

// Installed is one component as found in the guest.
type Installed struct {
	Role      profiles.Role `json:"role"`
	Component string        `json:"component"`
	Locked    string        `json:"locked"`
	Actual    string        `json:"actual"`
	Command   string        `json:"command"`
	// Files that differ from their locked digest.
	Changed []FileCheck `json:"changed,omitempty"`
	// Running is the version the running daemon reports through CRI
	// (CRI-O's RuntimeVersion).
	Running string `json:"running,omitempty"`
	// Commit is the source commit the binary reports, and LockedCommit the
	// lock's (a gomod artifact's module origin).
	Commit       string `json:"commit,omitempty"`
	LockedCommit string `json:"locked_commit,omitempty"`
	OK           bool   `json:"ok"`
}

// CommitOK reports whether the binary's commit is the lock's (nothing to
// compare when the lock records none).
func (it Installed) CommitOK() bool {
	if it.LockedCommit == "" {
		return true
	}
	return it.Commit != "" && (strings.HasPrefix(it.LockedCommit, it.Commit) || strings.HasPrefix(it.Commit, it.LockedCommit))
}

// VersionCommand is how a component reports its version in the guest.
func VersionCommand(comp *catalog.Component, src profiles.Source) string {
	if src.Kind() == profiles.KindPackage {
		return "dpkg-query -W -f '${Version}' " + guest.Quote(comp.Package)
	}
	dir := BinDir
	if comp.Directory {
		dir = CNIBinDir
	}
	return path.Join(dir, comp.Main()) + " " + strings.Join(comp.VersionArgs, " ")
}

var versionRE = regexp.MustCompile(`v?(\d+\.\d+(?:\.\d+)?(?:-[0-9A-Za-z.-]+)?)`)

// ParseVersion pulls the first version out of a --version output, keeping
// a prerelease ("1.34.0-rc.1"), or out of a Debian package version
// ("2.1.6+ds1-1" → "2.1.6").
func ParseVersion(out string) string {
	for _, line := range strings.Split(out, "\n") {
		low := strings.ToLower(line)
		if strings.Contains(low, "commit") || strings.Contains(low, "spec:") || strings.Contains(low, "go:") {
			continue
		}
		if m := versionRE.FindStringSubmatch(line); m != nil {
			v := m[1]
			// A Debian revision or build suffix is not a prerelease.
			if i := strings.IndexAny(v, "+~"); i > 0 {
				v = v[:i]
			}
			if strings.Contains(line, "+ds") || debianRev.MatchString(line) {
				v, _, _ = strings.Cut(v, "-")
			}
			return v
		}
	}
	return ""
}

var debianRev = regexp.MustCompile(`^\d[\w.+~]*-\d+[\w.+~]*$`)

var hexRE = regexp.MustCompile(`^[0-9a-f]{7,40}$`)

// ParseCommit reads the source commit a version output reports: CRI-O's
// "GitCommit:", runc's "commit:" (a hash, or git describe's "…-gHASH"), or
// semver build metadata ("v1.34.0+HASH", as envctl links crictl). It is ""
// when there is none or it is "unknown".
func ParseCommit(out string) string {
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		k, v, ok := strings.Cut(line, ":")
		if ok && (strings.EqualFold(k, "GitCommit") || strings.EqualFold(k, "commit")) {
			v = strings.TrimSpace(v)
			if i := strings.LastIndex(v, "-g"); i >= 0 && hexRE.MatchString(v[i+2:]) {
				v = v[i+2:]
			}
			if hexRE.MatchString(v) {
				return v
			}
			continue
		}
		for _, f := range strings.Fields(line) {
			if _, meta, ok := strings.Cut(f, "+"); ok && hexRE.MatchString(meta) {
				return meta
			}
		}
	}
	return ""
}

// RuntimeVersion reads the RuntimeVersion field of `crictl version`.
func RuntimeVersion(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "RuntimeVersion" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// DriftError names the components that are not what the lock says.
type DriftError struct{ Items []Installed }

func (e *DriftError) Error() string {
	var parts []string
	for _, it := range e.Items {
		for _, f := range it.Changed {
			actual := f.Actual
			if actual == "" {
				actual = "(missing)"
			}
			parts = append(parts, fmt.Sprintf("%s: %s has sha256 %s, the lock has %s", it.Component, f.Path, actual, f.Locked))
		}
		if !catalog.SameVersion(it.Actual, it.Locked) {
			parts = append(parts, fmt.Sprintf("%s: locked %s, installed %q (from `%s`)", it.Component, it.Locked, it.Actual, it.Command))
		}
		if !it.CommitOK() {
			got := it.Commit
			if got == "" {
				got = "none"
			}
			parts = append(parts, fmt.Sprintf("%s: locked commit %s, the binary reports %s (from `%s`)", it.Component, it.LockedCommit, got, it.Command))
		}
		if it.Running != "" && !catalog.SameVersion(it.Running, it.Locked) {
			parts = append(parts, fmt.Sprintf("%s: the running daemon reports RuntimeVersion %q through CRI, locked %s", it.Component, it.Running, it.Locked))
		}
	}
	return "drift: the guest does not run what the lock pins: " + strings.Join(parts, "; ") + "; the environment cannot be trusted, so nothing was tested"
}

// FaultClass implements fault.Classed: drift means the environment cannot
// be trusted, so the test cannot be run.
func (e *DriftError) FaultClass() fault.Class { return fault.Infra }

// Proof says how the drift check knows that the installed files are the
// locked ones.
type Proof string

const (
	// ProofDigests is the sha256 of every installed file, taken in the guest.
	ProofDigests Proof = "digests"
	// ProofSeal is a guest restored from a saved state whose seal
	// proves its disk and memory bit for bit the ones verified (by
	// digests) before it was saved; only versions and CRI are asked.
	ProofSeal Proof = "seal"
	// ProofSealRecord is ProofSeal on a state that also carries the drift
	// check it passed before it was saved, sealed with it: a binary whose
	// bytes are proven gives the version it gave then, so versions and
	// commits come from that record, and only the running CRI-O is asked
	// (its version, through CRI).
	ProofSealRecord Proof = "seal+record"
)

// Describe says what the proof is, for reports.
func (p Proof) Describe() string {
	switch p {
	case ProofSeal:
		return "files proven by the restored state's seal (their digests were checked in the guest before it was saved)"
	case ProofSealRecord:
		return "files and versions proven by the restored state's seal (both were checked in the guest before it was saved); the running CRI-O asked through CRI"
	}
	return "the sha256 of every installed file, checked in the guest"
}

// sealed reports whether the restored state's seal proves the files, so
// that nothing is hashed in the guest.
func (p Proof) sealed() bool { return p == ProofSeal || p == ProofSealRecord }

// recordFor is the entry of a sealed drift-check record that answers for
// part p: the same component and locked version and commit, and passed.
func recordFor(recorded []Installed, p Part) (Installed, bool) {
	locked := ""
	if p.Origin != nil {
		locked = p.Origin.Commit
	}
	for _, it := range recorded {
		if it.Role == p.Role && it.Component == p.Component && it.Locked == p.Version && it.LockedCommit == locked && it.OK {
			return it, true
		}
	}
	return Installed{}, false
}

// Verify is the drift check. In the guest it compares the sha256 of every
// installed file with the lock (unless proof is ProofSeal or
// ProofSealRecord), runs every component's version command (unless
// proof is ProofSealRecord and recorded, the check the sealed state
// passed, answers for it), and asks the running CRI-O for its version
// through CRI (`crictl version`), comparing full versions, prerelease
// included: all in one SSH round trip.
func Verify(ctx context.Context, g Guest, s Stack, proof Proof, recorded ...Installed) ([]Installed, error) {
	if proof != ProofSealRecord {
		recorded = nil
	}
	q, err := s.questions(proof, recorded)
	if err != nil {
		return nil, err
	}
	var res []guest.Result
	if len(q.cmds) > 0 {
		res, err = guest.Batch(ctx, g, q.cmds)
	}
	if err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return nil, fault.Infraf("drift check: %w", err)
	}
	sums := map[string]string{}
	if q.hash {
		for _, line := range strings.Split(res[0].Output, "\n") {
			if f := strings.Fields(line); len(f) == 2 {
				sums[f[1]] = f[0]
			}
		}
	}
	var out, drift []Installed
	for k, p := range s.Parts {
		it := q.judge(p, res, k, sums)
		if !it.OK {
			drift = append(drift, it)
		}
		out = append(out, it)
	}
	if len(drift) > 0 {
		return out, &DriftError{Items: drift}
	}
	return out, nil
}

// questions are the commands of one drift check: the digests (unless the
// seal proves them), then each part's version command (unless a sealed
// record answers for it), and CRI-O's answer through CRI after its own.
type questions struct {
	cmds  []string
	hash  bool
	asked []int         // each part's version command in cmds (-1: recorded)
	cri   []int         // CRI-O's `crictl version` in cmds (-1: none)
	files [][]GuestFile // each part's installed files
	recs  []Installed   // each part's sealed record, where asked is -1
}

func (s Stack) questions(proof Proof, recorded []Installed) (questions, error) {
	var q questions
	var quoted []string
	for _, p := range s.Parts {
		fs, err := s.files(p)
		if err != nil {
			return q, err
		}
		q.files = append(q.files, fs)
		for _, f := range fs {
			quoted = append(quoted, guest.Quote(f.Remote))
		}
	}
	if q.hash = !proof.sealed() && len(quoted) > 0; q.hash {
		q.cmds = append(q.cmds, "sha256sum "+strings.Join(quoted, " "))
	}
	for _, p := range s.Parts {
		comp, err := s.catalog().Get(p.Component)
		if err != nil {
			return q, fault.Inputf("lock: %v", err)
		}
		rec, ok := recordFor(recorded, p)
		q.recs = append(q.recs, rec)
		if ok {
			q.asked = append(q.asked, -1)
		} else {
			q.asked = append(q.asked, len(q.cmds))
			q.cmds = append(q.cmds, VersionCommand(comp, p.Source))
		}
		q.cri = append(q.cri, -1)
		if p.Role == profiles.RoleCRIO {
			q.cri[len(q.cri)-1] = len(q.cmds)
			q.cmds = append(q.cmds, "crictl version")
		}
	}
	return q, nil
}

// judge compares part k with the answers to its questions in res (or
// with its sealed record).
func (q questions) judge(p Part, res []guest.Result, k int, sums map[string]string) Installed {
	it := Installed{Role: p.Role, Component: p.Component, Locked: p.Version}
	if p.Origin != nil {
		it.LockedCommit = p.Origin.Commit
	}
	switch i := q.asked[k]; {
	case i < 0:
		it.Command, it.Actual, it.Commit = q.recs[k].Command, q.recs[k].Actual, q.recs[k].Commit
	case res[i].Exit == 0:
		it.Command, it.Actual, it.Commit = q.cmds[i], ParseVersion(res[i].Output), ParseCommit(res[i].Output)
	default:
		it.Command, it.Actual = q.cmds[i], "("+strings.TrimSpace(firstLine(res[i].Output))+")"
	}
	if q.hash {
		for _, f := range q.files[k] {
			if sums[f.Remote] != f.SHA256 {
				it.Changed = append(it.Changed, FileCheck{Path: f.Remote, Locked: f.SHA256, Actual: sums[f.Remote]})
			}
		}
	}
	it.OK = it.Actual != "" && catalog.SameVersion(it.Actual, p.Version) && len(it.Changed) == 0 && it.CommitOK()
	if i := q.cri[k]; i >= 0 {
		r := res[i]
		it.Running = RuntimeVersion(r.Output)
		if r.Exit != 0 || it.Running == "" {
			it.Running = "(`crictl version` answered: " + strings.TrimSpace(firstLine(r.Output)) + ")"
		}
		it.OK = it.OK && catalog.SameVersion(it.Running, p.Version)
	}
	return it
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
