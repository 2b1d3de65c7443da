package cellrun

import (
	"context"
	"fmt"
	"maps"
	"slices"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/compat"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artifacts"
	"github.com/envctl/envctl/provision/crio"
)

// Cached finds a component's files only if they are already on the host
// (*artifacts.Fetcher).
type Cached interface {
	Cached(cell lock.LockedCell, c lock.Part) (artifacts.Files, bool)
}

// Predict lists the known incompatibilities of a locked cell before
// anything boots: from its versions, and from the build info of whatever
// of its binaries are already on the host. It never downloads or builds.
func Predict(cell lock.LockedCell, c Cached) []compat.Finding {
	var builds []compat.Build
	for _, part := range cell.Components {
		if files, ok := c.Cached(cell, part); ok {
			builds = append(builds, artifacts.Builds(part, files)...)
		}
	}
	return compat.Predict(cell.Test, cell.Versions(), builds)
}

// OnHost is a cell's components on the host.
type OnHost struct {
	Parts  []crio.Part
	Builds []compat.Build
	// Tools are an upstream suite's tools, by lock.Tool* name.
	Tools map[string]artifacts.Files
	// Notes say where the lock's binary digests could not apply.
	Notes []string
}

// Fetch gets every component of a cell onto the host, checks each file
// against the digest the lock records for it, and reads what its binaries
// say about how they were built. A file whose digest is not the lock's is
// never installed. hold, when given, is handed each artifact's files as
// soon as they are there, so that the run holds them (cache gc leaves
// them alone) for as long as it lives; it checks them again under the
// hold, and its error (an entry removed or changed meanwhile) ends the
// fetch.
func Fetch(ctx context.Context, cell lock.LockedCell, f Fetcher, hold func(paths ...string) error) (OnHost, error) {
	if hold == nil {
		hold = func(...string) error { return nil }
	}
	var out OnHost
	for _, c := range cell.Components {
		files, err := f.Fetch(ctx, cell, c)
		if err != nil {
			return out, err
		}
		if err := hold(files.Paths()...); err != nil {
			return out, err
		}
		if note, err := checkBinaries(&c, files); err != nil {
			return out, err
		} else if note != "" {
			out.Notes = append(out.Notes, note)
		}
		out.Parts = append(out.Parts, crio.Part{Part: c, Files: files})
		out.Builds = append(out.Builds, artifacts.Builds(c, files)...)
	}
	if _, upstream := cell.Test.UpstreamFile(); upstream {
		out.Tools = map[string]artifacts.Files{}
		for _, name := range []string{lock.ToolBats, lock.ToolCRIOTests} {
			t, ok := cell.Tool(name)
			if !ok {
				return out, fault.Inputf("%s: the lock of cell %s pins no %s, which test %s needs; run `envctl lock` again", cell.Profile, cell.Name, name, cell.Test)
			}
			files, err := f.FetchTool(ctx, t)
			if err != nil {
				return out, err
			}
			if err := hold(files.Paths()...); err != nil {
				return out, err
			}
			out.Tools[name] = files
		}
	}
	return out, nil
}

// checkBinaries compares the fetched files with the lock's digests. A Go
// build by another toolchain than the lock's gives other digests by
// design: then the lock's digests are dropped for this run (the guest is
// checked against the build's own), and a note says so.
func checkBinaries(c *lock.Part, files artifacts.Files) (string, error) {
	if !c.CarriesFiles() || files.InGuest {
		return "", nil
	}
	if c.Source.Kind() == profiles.KindGoMod && c.Toolchain != "" && c.Toolchain != artifacts.Toolchain() {
		c.Binaries = nil
		return fmt.Sprintf("%s %s was built with %s, the lock's digests with %s: the guest is checked against this build's digests", c.Component, c.Version, artifacts.Toolchain(), c.Toolchain), nil
	}
	have := map[string]string{}
	for _, b := range files.List() {
		have[b.Name] = b.SHA256
	}
	for _, name := range slices.Sorted(maps.Keys(c.Binaries)) {
		got, ok := have[name]
		switch {
		case !ok:
			return "", fault.Inputf("lock: %s %s records binary %s, which its artifact does not have; run `envctl lock`", c.Component, c.Version, name)
		case got != c.Binaries[name]:
			return "", fault.Inputf("lock: %s %s: %s has sha256 %s, the lock records %s; the lock was edited, or its source now gives other bits: run `envctl lock` once you trust the source", c.Component, c.Version, name, got, c.Binaries[name])
		}
	}
	return "", nil
}

// RecordBinaries fills a fresh lock with the digest of every binary each
// artifact puts into the guest, fetching or building it; Go builds also
// record the toolchain.
func RecordBinaries(ctx context.Context, f *lock.File, p *profiles.Profile, fetch Fetcher) error {
	done := map[string]bool{}
	for _, name := range f.CellNames() {
		lc, err := f.Cell(p, name)
		if err != nil {
			return err
		}
		for _, part := range lc.Components {
			if !part.CarriesFiles() || done[part.Key()] {
				continue
			}
			done[part.Key()] = true
			files, err := fetch.Fetch(ctx, lc, part)
			if err != nil {
				return err
			}
			bins := map[string]string{}
			for _, b := range files.List() {
				if b.SHA256 == "" {
					return fault.Infraf("lock: %s %s: %s has no digest", part.Component, part.Version, b.Path)
				}
				bins[b.Name] = b.SHA256
			}
			i := slices.IndexFunc(f.Artifacts, func(a lock.Artifact) bool { return a.Key() == part.Key() })
			f.Artifacts[i].Binaries = bins
			if part.Source.Kind() == profiles.KindGoMod {
				f.Artifacts[i].Toolchain = artifacts.Toolchain()
			}
		}
	}
	return nil
}

// LockWith makes locks that pin every source (pinSources) and record the
// digests of every binary (RecordBinaries).
func LockWith(pinSources Locker, fetch Fetcher) Locker {
	return func(ctx context.Context, p *profiles.Profile) (*lock.File, error) {
		f, err := pinSources(ctx, p)
		if err != nil {
			return nil, err
		}
		return f, RecordBinaries(ctx, f, p, fetch)
	}
}
