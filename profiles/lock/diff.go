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
			out = append(out, Difference{Cell: cell, Part: part, Field: field, A: orNone(x), B: orNone(y), Provenance: provenance(part, field)})
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
	for _, pair := range pairCells(a, b) {
		ca, cb, name := pair.a, pair.b, pair.label
		if ca == nil || cb == nil {
			add(name, "lock", "cell", present(ca != nil), present(cb != nil))
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

// provenance tells the fields that say how or under which name a lock was
// made, not what it pins: the image's archive state, and the profile's
// name and the digest of its inputs (two profiles, "~> 1.34.0" and
// "1.34.0", may pin the same artifacts).
func provenance(part, field string) bool {
	return part == "image" && field == "snapshot" || part == "lock" && (field == "profile" || field == "profile_sha256")
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

// cellPair is a cell of A and the cell of B it is compared with (nil
// where one lock has no such cell), under the label the differences carry.
type cellPair struct {
	label string
	a, b  *Cell
}

// pairCells matches the cells of two locks. Two single-cell locks (two
// profiles, say crio-1.34-runc and seed-crictl-1.30) are compared cell to
// cell whatever their names; matrix cells are matched by their axis
// values (cri-tools=1.34.0,runtime=runc@1.3.6), in whatever order the
// axes are named; a cell without a match in the other lock is listed as
// present in one only.
func pairCells(a, b *File) []cellPair {
	if len(a.Cells) == 1 && len(b.Cells) == 1 {
		label := a.Cells[0].Name
		if b.Cells[0].Name != label {
			label += " ↔ " + b.Cells[0].Name
		}
		return []cellPair{{label, &a.Cells[0], &b.Cells[0]}}
	}
	byKey := map[string]*Cell{}
	for i := range b.Cells {
		byKey[axisKey(b.Cells[i].Name)] = &b.Cells[i]
	}
	var out []cellPair
	used := map[*Cell]bool{}
	for i := range a.Cells {
		ca := &a.Cells[i]
		cb := byKey[axisKey(ca.Name)]
		if cb != nil {
			used[cb] = true
		}
		out = append(out, cellPair{ca.Name, ca, cb})
	}
	for i := range b.Cells {
		if cb := &b.Cells[i]; !used[cb] {
			out = append(out, cellPair{cb.Name, nil, cb})
		}
	}
	slices.SortStableFunc(out, func(x, y cellPair) int { return strings.Compare(x.label, y.label) })
	return out
}

// axisKey is a matrix cell's axis values in a canonical order
// ("runtime=runc@1.3.6,cri-tools=1.34.0" and its reverse are one cell); a
// name that is not a list of axis values is its own key.
func axisKey(name string) string {
	parts := strings.Split(name, ",")
	for _, p := range parts {
		if k, _, ok := strings.Cut(p, "="); !ok || k == "" {
			return name
		}
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
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

// Summarize says first, in a few lines, what differs between two locks:
// the component versions ("cri-tools 1.34.0 → 1.30.0"), a component built
// from another commit or to other binaries at the same version, the image
// and how many of its packages, and cells only one lock has. A line that
// holds for every cell is said once; one that holds for some is prefixed
// with the cell.
func Summarize(a, b *File) []string {
	var out []string
	if a.Image.Name != b.Image.Name {
		out = append(out, fmt.Sprintf("image %s → %s", orNone(a.Image.Name), orNone(b.Image.Name)))
	} else if a.Image.Digest != b.Image.Digest {
		out = append(out, fmt.Sprintf("image %s: disk %s → %s", a.Image.Name, shortDigest(a.Image.Digest), shortDigest(b.Image.Digest)))
	}
	var pkgs []string
	for _, pkg := range unionKeys(a.Image.Packages, b.Image.Packages) {
		if x, y := a.Image.Packages[pkg], b.Image.Packages[pkg]; x != y {
			pkgs = append(pkgs, fmt.Sprintf("%s %s → %s", pkg, orNone(x), orNone(y)))
		}
	}
	if n := len(pkgs); n > 0 {
		more := ""
		if n > 3 {
			pkgs, more = pkgs[:3], fmt.Sprintf(", and %d more", n-3)
		}
		out = append(out, fmt.Sprintf("%d image package(s) differ: %s%s", n, strings.Join(pkgs, ", "), more))
	}
	pairs := pairCells(a, b)
	lines, byLine, compared := []string{}, map[string][]string{}, 0
	for _, p := range pairs {
		if p.a == nil || p.b == nil {
			which := "A"
			if p.a == nil {
				which = "B"
			}
			out = append(out, fmt.Sprintf("cell %s only in %s", p.label, which))
			continue
		}
		compared++
		for _, role := range unionKeys(p.a.Components, p.b.Components) {
			x, _ := a.Artifact(p.a.Components[role])
			y, _ := b.Artifact(p.b.Components[role])
			line := componentChange(string(role), x, y)
			if line == "" {
				continue
			}
			if _, ok := byLine[line]; !ok {
				lines = append(lines, line)
			}
			byLine[line] = append(byLine[line], p.label)
		}
	}
	for _, line := range lines {
		cells := byLine[line]
		if len(cells) == compared {
			out = append(out, line)
			continue
		}
		for _, c := range cells {
			out = append(out, c+": "+line)
		}
	}
	return out
}

// componentChange says how one role's artifact differs ("" when it does
// not): another component or version, else another commit, else other
// binaries or another build of the same version.
func componentChange(role string, x, y Artifact) string {
	name := func(a Artifact) string {
		if a.Component == "" {
			return "(none)"
		}
		return a.Component + " " + a.Version
	}
	switch {
	case x.Component != y.Component:
		return fmt.Sprintf("%s: %s → %s", role, name(x), name(y))
	case x.Version != y.Version:
		return fmt.Sprintf("%s %s → %s", x.Component, x.Version, y.Version)
	}
	cx, cy := "", ""
	if x.Origin != nil {
		cx = x.Origin.Commit
	}
	if y.Origin != nil {
		cy = y.Origin.Commit
	}
	if cx != cy {
		return fmt.Sprintf("%s %s: commit %s → %s", x.Component, x.Version, orNone(short(cx)), orNone(short(cy)))
	}
	var bins []string
	for _, bin := range unionKeys(x.Binaries, y.Binaries) {
		if x.Binaries[bin] != y.Binaries[bin] {
			bins = append(bins, bin)
		}
	}
	if len(bins) > 0 {
		return fmt.Sprintf("%s %s: other binaries (%s)", x.Component, x.Version, strings.Join(bins, ", "))
	}
	for _, f := range artifactFields {
		if f.get(x) != f.get(y) {
			return fmt.Sprintf("%s %s: another %s", x.Component, x.Version, f.name)
		}
	}
	return ""
}

// shortDigest cuts a digest to its algorithm and 12 hex digits.
func shortDigest(s string) string {
	algo, hex, ok := strings.Cut(s, ":")
	if !ok {
		return short(s)
	}
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return algo + ":" + hex
}
