package cellrun

import (
	"context"

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

// Fetch gets every component of a cell onto the host and reads what its
// binaries say about how they were built.
func Fetch(ctx context.Context, cell lock.LockedCell, f Fetcher) ([]crio.Part, []compat.Build, error) {
	var parts []crio.Part
	var builds []compat.Build
	for _, c := range cell.Components {
		files, err := f.Fetch(ctx, cell, c)
		if err != nil {
			return nil, nil, err
		}
		parts = append(parts, crio.Part{Part: c, Files: files})
		builds = append(builds, artifacts.Builds(c, files)...)
	}
	return parts, builds, nil
}
