package lock

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/atomicfile"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/catalog"
)

// FormatVersion is the lock file format. 3 added the digest of every
// binary that goes into the guest; 4 the tools of upstream test suites;
// 5 where each commit was read (origin.source) and the Debian archive
// state a local image was built from (image.snapshot).
const FormatVersion = 5

// The tools a lock pins for upstream test suites.
const (
	// ToolBats is the bats package (a Debian .deb, by sha256).
	ToolBats = "bats"
	// ToolCRIOTests is CRI-O's test/ tree: the Go module of the locked
	// CRI-O version, by go.sum hash (copyimg is built from it).
	ToolCRIOTests = "cri-o-tests"
	// CRIOModule is the CRI-O Go module.
	CRIOModule = "github.com/cri-o/cri-o"
)

// Artifact is one exactly pinned component build.
type Artifact struct {
	Component string          `yaml:"component" json:"component"`
	Version   string          `yaml:"version" json:"version"`
	Source    profiles.Source `yaml:"source" json:"source"`
	URL       string          `yaml:"url,omitempty" json:"url,omitempty"`
	SHA256    string          `yaml:"sha256,omitempty" json:"sha256,omitempty"`
	Module    string          `yaml:"module,omitempty" json:"module,omitempty"`
	ModuleSum string          `yaml:"module_sum,omitempty" json:"module_sum,omitempty"`
	Recipe    string          `yaml:"recipe,omitempty" json:"recipe,omitempty"`
	Package   string          `yaml:"package,omitempty" json:"package,omitempty"`
	Bundle    string          `yaml:"bundle,omitempty" json:"bundle,omitempty"` // key of the CRI-O bundle artifact
	// Binaries is the sha256 (hex) of every file the artifact puts into
	// the guest, by its file name there. The guest's drift check compares
	// the installed files with these.
	Binaries map[string]string `yaml:"binaries,omitempty" json:"binaries,omitempty"`
	// Toolchain is the Go toolchain a gomod artifact's binaries were built
	// with: another toolchain gives other (equally valid) digests.
	Toolchain string `yaml:"toolchain,omitempty" json:"toolchain,omitempty"`
	// Origin is where a gomod artifact's code comes from, as the module
	// proxy's .info records it.
	Origin *Origin `yaml:"origin,omitempty" json:"origin,omitempty"`
}

// Origin is a module version's source: the repository, the ref, the
// commit and its time, where envctl read the commit, and, when that commit
// is not upstream's release commit for the version (a moved tag), the
// release commit for comparison.
type Origin struct {
	VCS    string    `yaml:"vcs,omitempty" json:"vcs,omitempty"`
	URL    string    `yaml:"url,omitempty" json:"url,omitempty"`
	Ref    string    `yaml:"ref,omitempty" json:"ref,omitempty"`
	Commit string    `yaml:"commit" json:"commit"`
	Time   time.Time `yaml:"time" json:"time"`
	// Source is where the commit was read.
	Source CommitSource `yaml:"source" json:"source"`
	// Release is upstream's release commit when it differs from Commit.
	Release string `yaml:"release_commit,omitempty" json:"release_commit,omitempty"`
}

// CommitSource says where a locked commit was read. envctl takes a
// version's commit from the first source that has one, in this order:
// the module proxy's record of the version (its .info Origin), then the
// commit upstream's release tag points at (envctl's catalog). A profile's
// `commit:` pin selects, and must agree with the source the commit comes
// from; two sources that disagree are refused (a moved tag is accepted
// only when pinned or allowed, and then both commits are recorded).
type CommitSource string

// The commit sources, in the order envctl asks them.
const (
	CommitFromModuleProxy CommitSource = "module-proxy"
	CommitFromCatalog     CommitSource = "catalog"
)

// Label is the version as people should read it: the version, and for a
// module snapshot whose tag moved upstream, what it really is.
func (a Artifact) Label() string {
	if a.Origin == nil || a.Origin.Release == "" {
		return a.Version
	}
	return fmt.Sprintf("%s (module snapshot %s, %s; release is %s)", a.Version, short(a.Origin.Commit), a.Origin.Time.Format("2006-01-02"), short(a.Origin.Release))
}

func short(commit string) string {
	if len(commit) > 8 {
		return commit[:8]
	}
	return commit
}

// CarriesFiles reports whether the artifact puts files into the guest (a
// guest package does not).
func (a Artifact) CarriesFiles() bool { return a.Source.Kind() != profiles.KindPackage }

// Key identifies an artifact within a lock.
func (a Artifact) Key() string { return a.Component + "@" + a.Version + "/" + string(a.Source) }

// Pin is the artifact's pin in words: a digest, a module sum, a package.
func (a Artifact) Pin() string {
	switch {
	case a.ModuleSum != "":
		return a.Module + " " + a.ModuleSum
	case a.Package != "":
		return "guest package " + a.Package
	case a.Bundle != "":
		return "in " + a.Bundle
	case a.SHA256 != "":
		return "sha256:" + a.SHA256
	}
	return "-"
}

// ImageKind says where a locked image comes from.
type ImageKind string

// The image kinds.
const (
	ImageDownload ImageKind = "download" // a pinned cloud image
	ImageLocal    ImageKind = "local"    // built on this machine by `envctl image build`
)

// Image is a resolved base image: exactly what a lock pins.
type Image struct {
	Name   string    `json:"name" yaml:"name"`
	Kind   ImageKind `json:"kind" yaml:"kind"`
	URL    string    `json:"url,omitempty" yaml:"url,omitempty"`
	Digest string    `json:"digest" yaml:"digest"`
	Format string    `json:"format" yaml:"format"`
	Kernel string    `json:"kernel,omitempty" yaml:"kernel,omitempty"`
	Initrd string    `json:"initrd,omitempty" yaml:"initrd,omitempty"`
	// Recipe is the hash of the build recipe a local image comes from, and
	// Packages its package set (name → Debian version): a rebuild from the
	// same recipe and packages gives the same digests.
	Recipe string `json:"recipe,omitempty" yaml:"recipe,omitempty"`
	// Snapshot is the state of the Debian archive the packages were taken
	// from, as a snapshot.debian.org timestamp (YYYYMMDDTHHMMSSZ): the
	// newest Release date among the suites the build read. A rebuild reads
	// the snapshot archive at that state when it can.
	Snapshot string            `json:"snapshot,omitempty" yaml:"snapshot,omitempty"`
	Packages map[string]string `json:"packages,omitempty" yaml:"packages,omitempty"`
}

// Cell pins each role of one cell to an artifact key.
type Cell struct {
	Name       string                   `yaml:"name" json:"name"`
	Components map[profiles.Role]string `yaml:"components" json:"components"`
}

// File is a lock file.
type File struct {
	LockVersion int               `yaml:"lock_version" json:"lock_version"`
	Profile     string            `yaml:"profile" json:"profile"`
	ProfileHash string            `yaml:"profile_sha256" json:"profile_sha256"`
	Inputs      map[string]string `yaml:"inputs" json:"inputs"`
	Generated   time.Time         `yaml:"generated" json:"generated"`
	Arch        string            `yaml:"arch" json:"arch"`
	Image       Image             `yaml:"image" json:"image"`
	Artifacts   []Artifact        `yaml:"artifacts" json:"artifacts"`
	// Tools are what upstream test suites need: bats, and CRI-O's test
	// tree for each locked CRI-O version.
	Tools []Artifact `yaml:"tools,omitempty" json:"tools,omitempty"`
	Cells []Cell     `yaml:"cells" json:"cells"`
}

// Artifact finds an artifact by key.
func (f *File) Artifact(key string) (Artifact, bool) {
	for _, a := range f.Artifacts {
		if a.Key() == key {
			return a, true
		}
	}
	return Artifact{}, false
}

// Part is one role of a locked cell and the artifact that fills it.
type Part struct {
	Role profiles.Role `json:"role"`
	Artifact
}

// LockedCell is everything one run needs: the profile's test and VM shape,
// the pinned image, and the pinned artifact of every role, in install
// order. The pipeline takes exactly this.
type LockedCell struct {
	Profile    string            `json:"profile"`
	Name       string            `json:"cell"`
	Test       profiles.TestName `json:"test"`
	VM         profiles.VM       `json:"vm"`
	Image      Image             `json:"image"`
	Components []Part            `json:"components"`
	// Tools are bats and the CRI-O test tree of the cell's CRI-O version,
	// when the lock has them.
	Tools []Artifact `json:"tools,omitempty"`
	// Hash identifies the lock entry: image and every artifact pin (and
	// the tools, when the test runs an upstream suite).
	Hash string `json:"lock_sha256"`
}

// WithTest is the cell with another test (`--test` on the command line):
// the lock pins the same artifacts and tools whichever suite runs.
func (c LockedCell) WithTest(t profiles.TestName) LockedCell {
	c.Test = t
	c.Hash = cellHash(c)
	return c
}

// Tool returns one of the cell's tools.
func (c LockedCell) Tool(name string) (Artifact, bool) {
	for _, t := range c.Tools {
		if t.Component == name {
			return t, true
		}
	}
	return Artifact{}, false
}

// Component returns the artifact in a role.
func (c LockedCell) Component(role profiles.Role) (Artifact, bool) {
	for _, x := range c.Components {
		if x.Role == role {
			return x.Artifact, true
		}
	}
	return Artifact{}, false
}

// Versions maps each component's catalog name to its locked version.
func (c LockedCell) Versions() map[string]string {
	out := map[string]string{}
	for _, x := range c.Components {
		out[x.Component] = x.Version
	}
	return out
}

// VersionList prints "cri-o 1.34.0, cri-tools 1.30.0, runc 1.3.6".
func (c LockedCell) VersionList() string {
	parts := make([]string, len(c.Components))
	for i, x := range c.Components {
		parts[i] = x.Component + " " + x.Version
	}
	return strings.Join(parts, ", ")
}

// CellNames lists the lock's cells in order.
func (f *File) CellNames() []string {
	out := make([]string, len(f.Cells))
	for i, c := range f.Cells {
		out[i] = c.Name
	}
	return out
}

// Cell returns one locked cell of the profile.
func (f *File) Cell(p *profiles.Profile, name string) (LockedCell, error) {
	for _, c := range f.Cells {
		if c.Name != name {
			continue
		}
		lc := LockedCell{Profile: f.Profile, Name: name, Test: p.Test, VM: p.VM, Image: f.Image}
		for _, role := range profiles.Roles {
			key, ok := c.Components[role]
			if !ok {
				continue
			}
			a, ok := f.Artifact(key)
			if !ok {
				return LockedCell{}, &StaleError{Lock: p.LockPath(), Msg: fmt.Sprintf("cell %s names artifact %s, which the lock does not hold", name, key)}
			}
			lc.Components = append(lc.Components, Part{Role: role, Artifact: a})
		}
		crio, _ := lc.Component(profiles.RoleCRIO)
		for _, t := range f.Tools {
			if t.Component != ToolCRIOTests || t.Version == crio.Version {
				lc.Tools = append(lc.Tools, t)
			}
		}
		lc.Hash = cellHash(lc)
		return lc, nil
	}
	return LockedCell{}, fault.Inputf("%s has no cell %q; cells: %s", p.LockPath(), name, strings.Join(f.CellNames(), ", "))
}

func cellHash(c LockedCell) string {
	var b strings.Builder
	fmt.Fprintf(&b, "image %s %s %s %s\n", c.Image.Digest, c.Image.Kernel, c.Image.Initrd, c.Image.Format)
	for _, x := range c.Components {
		fmt.Fprintf(&b, "%s %s %s\n", x.Role, x.Key(), x.Pin())
	}
	if _, upstream := c.Test.UpstreamFile(); upstream {
		for _, t := range c.Tools {
			fmt.Fprintf(&b, "tool %s %s\n", t.Key(), t.Pin())
		}
	}
	return profiles.HashInputs(map[string]string{"cell": b.String()})
}

// Write saves the lock atomically.
func Write(path string, f *File) error {
	b, err := encode(f)
	if err != nil {
		return fault.Infraf("lock %s: %w", path, err)
	}
	if err := atomicfile.Write(path, b, 0o644); err != nil {
		return fault.Infraf("lock %s: %w", path, err)
	}
	return nil
}

func encode(f *File) ([]byte, error) {
	var buf bytes.Buffer
	buf.WriteString("# Written by envctl. Do not edit: run `envctl lock PROFILE` again instead.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(f); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// Update writes f to path as a lock made again: when path already holds
// a lock of the same image, f keeps that lock's archive state (or the
// earlier of the two: see EarliestState), and when nothing but the time
// it was generated would change, the file is left as it is and changed
// is false. A lock that is not there, or not readable as one, is
// replaced.
func Update(path string, f *File) (changed bool, err error) {
	if Unchanged(path, f) {
		return false, nil
	}
	return true, Write(path, f)
}

// Unchanged reports whether Update would leave path as it is; f takes
// the archive state and time of the lock there, as Update gives it.
func Unchanged(path string, f *File) bool {
	prev, err := Read(path)
	if err != nil {
		return false
	}
	f.Image = f.Image.WithStateOf(prev.Image)
	same := *f
	same.Generated = prev.Generated
	a, errA := encode(&same)
	b, errB := encode(prev)
	if errA == nil && errB == nil && bytes.Equal(a, b) {
		*f = same
		return true
	}
	return false
}

// MissingError is a profile that has no lock file yet.
type MissingError struct{ Profile, Lock string }

func (e *MissingError) Error() string {
	return fmt.Sprintf("profile %s has no lock file %s; run `envctl lock %s`, or `envctl up` without --locked to write it", e.Profile, e.Lock, e.Profile)
}

// FaultClass implements fault.Classed.
func (e *MissingError) FaultClass() fault.Class { return fault.Input }

// StaleError is a lock that no longer matches its profile or this host.
type StaleError struct {
	Lock string
	Msg  string
}

func (e *StaleError) Error() string {
	return fmt.Sprintf("%s is stale: %s; run `envctl lock` to re-pin it", e.Lock, e.Msg)
}

// FaultClass implements fault.Classed.
func (e *StaleError) FaultClass() fault.Class { return fault.Input }

// Read loads a lock file. A missing file gives an error that matches
// fs.ErrNotExist.
func Read(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fault.Infraf("lock %s: %w", path, err)
	}
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, &StaleError{Lock: path, Msg: fmt.Sprintf("it is not a valid lock file (%v)", oneLine(err.Error()))}
	}
	if err := f.Validate(path); err != nil {
		return nil, err
	}
	return &f, nil
}

// ForProfile loads the profile's lock and checks that it still matches the
// profile and this host.
func ForProfile(p *profiles.Profile, arch string) (*File, error) {
	path := p.LockPath()
	f, err := Read(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, &MissingError{Profile: p.Path, Lock: path}
	}
	if err != nil {
		return nil, err
	}
	if err := f.Check(p, arch); err != nil {
		return nil, err
	}
	return f, nil
}

// Check compares the lock with the profile it claims to pin and with this
// host, and names the first field that differs.
func (f *File) Check(p *profiles.Profile, arch string) error {
	path := p.LockPath()
	switch {
	case f.LockVersion != FormatVersion:
		return &StaleError{Lock: path, Msg: fmt.Sprintf("lock format %d, this envctl writes %d", f.LockVersion, FormatVersion)}
	case f.Arch != arch:
		return &StaleError{Lock: path, Msg: fmt.Sprintf("locked for %s, this host is %s", f.Arch, arch)}
	}
	now := p.Inputs()
	if d := DiffInputs(f.Inputs, now); d != "" {
		return &StaleError{Lock: path, Msg: d + " since it was written"}
	}
	if f.ProfileHash != profiles.HashInputs(f.Inputs) || f.ProfileHash != p.Hash() {
		return &StaleError{Lock: path, Msg: "its profile hash does not match its inputs (edited by hand?)"}
	}
	return f.matchesProfile(p)
}

// TamperedError is a lock whose content is not what its profile resolves
// to: edited by hand, or badly merged.
type TamperedError struct {
	Lock, Field, Msg string
}

func (e *TamperedError) Error() string {
	return fmt.Sprintf("%s: %s: %s; the lock was edited by hand or badly merged: run `envctl lock` to write it again", e.Lock, e.Field, e.Msg)
}

// FaultClass implements fault.Classed.
func (e *TamperedError) FaultClass() fault.Class { return fault.Input }

// matchesProfile re-resolves the profile offline against the catalog and
// checks that every cell of the lock pins exactly the resolved component,
// version and source, and that every artifact's binaries are recorded.
func (f *File) matchesProfile(p *profiles.Profile) error {
	path := p.LockPath()
	cells, err := profiles.Resolve(catalog.Default(), p)
	if err != nil {
		return err
	}
	if got, want := f.CellNames(), cellNames(cells); !slices.Equal(got, want) {
		return &TamperedError{Lock: path, Field: "cells", Msg: fmt.Sprintf("the lock has %s, the profile resolves to %s", strings.Join(got, ", "), strings.Join(want, ", "))}
	}
	for i, rc := range cells {
		lc := f.Cells[i]
		for _, r := range rc.Components {
			field := fmt.Sprintf("cells[%s].components.%s", rc.Name, r.Role)
			key, ok := lc.Components[r.Role]
			if !ok {
				return &TamperedError{Lock: path, Field: field, Msg: "missing; the profile pins " + r.Name + " " + r.Version}
			}
			want := Artifact{Component: r.Name, Version: r.Version, Source: r.Source}.Key()
			if key != want {
				return &TamperedError{Lock: path, Field: field, Msg: fmt.Sprintf("the lock pins %s, the profile resolves to %s", key, want)}
			}
			a, ok := f.Artifact(key)
			if !ok {
				return &TamperedError{Lock: path, Field: field, Msg: "names artifact " + key + ", which the lock does not hold"}
			}
			if r.Commit != "" && (a.Origin == nil || !strings.HasPrefix(a.Origin.Commit, r.Commit)) {
				got := "none"
				if a.Origin != nil {
					got = a.Origin.Commit
				}
				return &TamperedError{Lock: path, Field: field + ".commit", Msg: fmt.Sprintf("the profile pins commit %s, the lock records %s", r.Commit, got)}
			}
			if a.CarriesFiles() && len(a.Binaries) == 0 {
				return &StaleError{Lock: path, Msg: fmt.Sprintf("artifact %s records no binary digests", key)}
			}
		}
		if len(lc.Components) != len(rc.Components) {
			return &TamperedError{Lock: path, Field: "cells[" + rc.Name + "].components", Msg: fmt.Sprintf("the lock pins %d roles, the profile %d", len(lc.Components), len(rc.Components))}
		}
	}
	return nil
}

func cellNames(cells []profiles.ResolvedCell) []string {
	out := make([]string, len(cells))
	for i, c := range cells {
		out[i] = c.Name
	}
	return out
}

// DiffInputs names the first field that differs between two sets of
// profile inputs, or "" when they are equal.
func DiffInputs(was, now map[string]string) string {
	keys := slices.Sorted(maps.Keys(was))
	for k := range now {
		if _, ok := was[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range slices.Compact(keys) {
		a, okA := was[k]
		b, okB := now[k]
		switch {
		case !okA:
			return fmt.Sprintf("the profile added %s: %q", k, b)
		case !okB:
			return fmt.Sprintf("the profile dropped %s (was %q)", k, a)
		case a != b:
			return fmt.Sprintf("the profile changed %s from %q to %q", k, a, b)
		}
	}
	return ""
}

// WriteTable prints what a lock pins, for humans.
func (f *File) WriteTable(w io.Writer, path string) {
	fmt.Fprintf(w, "wrote %s: image %s (%s), %d artifacts, %d cells\n", path, f.Image.Name, f.Image.Digest, len(f.Artifacts), len(f.Cells))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tVERSION\tSOURCE\tPIN")
	for _, a := range f.Artifacts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", a.Component, a.Label(), a.Source, a.Pin())
	}
	_ = tw.Flush()
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
