package lock

import (
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
)

// Difference is one field that differs between two locks.
type Difference struct {
	// Cell is the matrix cell ("" for the lock as a whole and its image).
	Cell string `json:"cell,omitempty"`
	// Part is "image", a role ("cri-tools"), or "lock".
	Part  string `json:"part"`
	Field string `json:"field"`
	A     string `json:"a"`
	B     string `json:"b"`
	// Provenance marks a field that says how something was made, not what
	// it is (the Debian archive state an image was read from): two locks
	// that differ only there pin the same things.
	Provenance bool `json:"provenance,omitempty"`
}

// Content is the differences that are not provenance: what two locks
// really pin differently.
func Content(diffs []Difference) []Difference {
	var out []Difference
	for _, d := range diffs {
		if !d.Provenance {
			out = append(out, d)
		}
	}
	return out
}

// Diff lists what differs between two locks: the image (digests, recipe,
// every package), and per cell and role the artifact (component, version,
// source, commit, sums, every binary's digest). It answers the question
// of two hosts that disagree: what exactly is different between them.
func Diff(a, b *File) []Difference {
	var out []Difference
	add := func(cell, part, field, x, y string) {
		if x != y {
			out = append(out, Difference{Cell: cell, Part: part, Field: field, A: orNone(x), B: orNone(y), Provenance: part == "image" && field == "snapshot"})
		}
	}
	add("", "lock", "profile", a.Profile, b.Profile)
	add("", "lock", "arch", a.Arch, b.Arch)
	add("", "lock", "profile_sha256", a.ProfileHash, b.ProfileHash)
	for _, f := range imageFields {
		add("", "image", f.name, f.get(a.Image), f.get(b.Image))
	}
	for _, pkg := range unionKeys(a.Image.Packages, b.Image.Packages) {
		add("", "image", "package "+pkg, a.Image.Packages[pkg], b.Image.Packages[pkg])
	}
	toolsA, toolsB := toolMap(a), toolMap(b)
	for _, key := range unionKeys(toolsA, toolsB) {
		x, okX := toolsA[key]
		y, okY := toolsB[key]
		if !okX || !okY {
			add("", "tool "+key, "tool", present(okX), present(okY))
			continue
		}
		for _, f := range artifactFields {
			add("", "tool "+key, f.name, f.get(x), f.get(y))
		}
	}
	cellsA, cellsB := cellMap(a), cellMap(b)
	for _, name := range unionKeys(cellsA, cellsB) {
		ca, okA := cellsA[name]
		cb, okB := cellsB[name]
		if !okA || !okB {
			add(name, "lock", "cell", present(okA), present(okB))
			continue
		}
		for _, role := range unionKeys(ca.Components, cb.Components) {
			x, okX := a.Artifact(ca.Components[role])
			y, okY := b.Artifact(cb.Components[role])
			if !okX || !okY {
				add(name, string(role), "artifact", ca.Components[role], cb.Components[role])
				continue
			}
			for _, f := range artifactFields {
				add(name, string(role), f.name, f.get(x), f.get(y))
			}
			for _, bin := range unionKeys(x.Binaries, y.Binaries) {
				add(name, string(role), "binary "+bin, x.Binaries[bin], y.Binaries[bin])
			}
		}
	}
	return out
}

type field[T any] struct {
	name string
	get  func(T) string
}

var imageFields = []field[Image]{
	{"name", func(i Image) string { return i.Name }},
	{"kind", func(i Image) string { return i.Kind.String() }},
	{"disk", func(i Image) string { return i.Digest }},
	{"kernel", func(i Image) string { return i.Kernel }},
	{"initrd", func(i Image) string { return i.Initrd }},
	{"format", func(i Image) string { return i.Format }},
	{"recipe", func(i Image) string { return i.Recipe }},
	{"snapshot", func(i Image) string { return i.Snapshot }},
}

var artifactFields = []field[Artifact]{
	{"component", func(a Artifact) string { return a.Component }},
	{"version", func(a Artifact) string { return a.Version }},
	{"source", func(a Artifact) string { return string(a.Source) }},
	{"commit", func(a Artifact) string {
		if a.Origin == nil {
			return ""
		}
		return a.Origin.Commit
	}},
	{"commit_source", func(a Artifact) string {
		if a.Origin == nil {
			return ""
		}
		return string(a.Origin.Source)
	}},
	{"module_sum", func(a Artifact) string { return a.ModuleSum }},
	{"sha256", func(a Artifact) string { return a.SHA256 }},
	{"url", func(a Artifact) string { return a.URL }},
	{"package", func(a Artifact) string { return a.Package }},
	{"toolchain", func(a Artifact) string { return a.Toolchain }},
}

func (k ImageKind) String() string { return string(k) }

// toolMap keys a lock's tools by name and, for CRI-O's test tree, version.
func toolMap(f *File) map[string]Artifact {
	out := map[string]Artifact{}
	for _, t := range f.Tools {
		key := t.Component
		if t.Component == ToolCRIOTests {
			key += "@" + t.Version
		}
		out[key] = t
	}
	return out
}

func cellMap(f *File) map[string]Cell {
	m := map[string]Cell{}
	for _, c := range f.Cells {
		m[c.Name] = c
	}
	return m
}

func unionKeys[K ~string, V any](a, b map[K]V) []K {
	keys := slices.Collect(maps.Keys(a))
	for k := range b {
		if _, ok := a[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

func present(ok bool) string {
	if ok {
		return "present"
	}
	return ""
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}

// WriteDiff prints differences for humans.
func WriteDiff(w io.Writer, nameA, nameB string, diffs []Difference) {
	if len(diffs) == 0 {
		fmt.Fprintf(w, "%s and %s pin the same environment\n", nameA, nameB)
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "CELL\tPART\tFIELD\t%s\t%s\n", strings.ToUpper(nameA), strings.ToUpper(nameB))
	for _, d := range diffs {
		field := d.Field
		if d.Provenance {
			field += " (provenance)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", orDash(d.Cell), d.Part, field, d.A, d.B)
	}
	_ = tw.Flush()
	if n := len(Content(diffs)); n == 0 {
		fmt.Fprintf(w, "%s and %s pin the same environment; only provenance differs\n", nameA, nameB)
	} else {
		fmt.Fprintf(w, "%d differences\n", n)
	}
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
