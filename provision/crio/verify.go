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

// Verify is the drift check. In the guest it compares the sha256 of every
// installed file with the lock, runs every component's version command,
// and asks the running CRI-O for its version through CRI (`crictl
// version`), comparing full versions, prerelease included.
func Verify(ctx context.Context, g Guest, s Stack) ([]Installed, error) {
	files := map[profiles.Role][]GuestFile{}
	var paths []string
	for _, p := range s.Parts {
		fs, err := s.files(p)
		if err != nil {
			return nil, err
		}
		files[p.Role] = fs
		for _, f := range fs {
			paths = append(paths, f.Remote)
		}
	}
	var sums map[string]string
	if len(paths) > 0 {
		var err error
		if sums, err = g.SHA256(ctx, paths...); err != nil {
			return nil, fault.Infraf("drift check: %w", err)
		}
	}
	var out, drift []Installed
	for _, p := range s.Parts {
		comp, err := s.catalog().Get(p.Component)
		if err != nil {
			return nil, fault.Inputf("lock: %v", err)
		}
		cmd := VersionCommand(comp, p.Source)
		res, err := g.Output(ctx, cmd)
		if ctx.Err() != nil {
			return nil, fault.Infraf("drift check: %w", ctx.Err())
		}
		it := Installed{Role: p.Role, Component: p.Component, Locked: p.Version, Command: cmd}
		if p.Origin != nil {
			it.LockedCommit = p.Origin.Commit
		}
		if err == nil {
			it.Actual, it.Commit = ParseVersion(res), ParseCommit(res)
		} else {
			it.Actual = "(" + strings.TrimSpace(firstLine(res)) + ")"
		}
		for _, f := range files[p.Role] {
			if sums[f.Remote] != f.SHA256 {
				it.Changed = append(it.Changed, FileCheck{Path: f.Remote, Locked: f.SHA256, Actual: sums[f.Remote]})
			}
		}
		it.OK = it.Actual != "" && catalog.SameVersion(it.Actual, p.Version) && len(it.Changed) == 0 && it.CommitOK()
		if p.Role == profiles.RoleCRIO {
			res, err := g.Output(ctx, "crictl version")
			it.Running = RuntimeVersion(res)
			if err != nil || it.Running == "" {
				it.Running = "(`crictl version` answered: " + strings.TrimSpace(firstLine(res)) + ")"
			}
			it.OK = it.OK && catalog.SameVersion(it.Running, p.Version)
		}
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

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
