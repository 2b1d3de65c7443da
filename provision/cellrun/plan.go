package cellrun

import (
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"text/tabwriter"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/compat"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artifacts"
)

// PlanCell is what a run would do for one cell.
type PlanCell struct {
	Name      string            `json:"name"`
	Versions  map[string]string `json:"versions"`
	Artifacts []lock.Part       `json:"artifacts,omitempty"`
	Warnings  []compat.Finding  `json:"warnings,omitempty"`
}

// Plan is a dry run: the steps, the artifacts, and the predicted
// incompatibilities of every cell, before anything is fetched or booted.
type Plan struct {
	Profile string `json:"profile"`
	Lock    string `json:"lock"`
	LockErr string `json:"lock_error,omitempty"`
	Image   string `json:"image"`
	Pinned  string `json:"pinned_image,omitempty"`
	// ImageFrom says where the pinned image would come from here, and
	// whether the lock would be re-pinned (images.Store.Describe).
	ImageFrom string     `json:"image_from,omitempty"`
	Steps     []string   `json:"steps"`
	Cells     []PlanCell `json:"cells"`
}

// MakePlan plans a profile's cells. With a lock, it predicts from the
// build info of whatever is already cached; without one, from versions.
func MakePlan(p *profiles.Profile, cells []profiles.ResolvedCell, lf *lock.File, lockErr error, cached Cached) (*Plan, error) {
	pl := &Plan{Profile: p.Name, Lock: p.LockPath(), Image: p.Image, Steps: steps(p)}
	if lockErr != nil {
		pl.LockErr = lockErr.Error()
	} else {
		pl.Pinned = lf.Image.Name + " " + lf.Image.Digest
	}
	for _, c := range cells {
		pc := PlanCell{Name: c.Name, Versions: c.Versions()}
		if lockErr == nil {
			lc, err := lf.Cell(p, c.Name)
			if err != nil {
				return nil, err
			}
			pc.Artifacts, pc.Warnings = lc.Components, Predict(lc, cached)
		} else {
			pc.Warnings = compat.Predict(p.Test, pc.Versions, nil)
		}
		pl.Cells = append(pl.Cells, pc)
	}
	return pl, nil
}

func steps(p *profiles.Profile) []string {
	out := []string{
		fmt.Sprintf("fetch or build the locked artifacts and image %s (cached by digest)", p.Image),
		fmt.Sprintf("boot a throwaway VM (%d vCPU, %s memory, %s disk) with a fresh SSH key and pinned host key", p.VM.CPUs, p.VM.Memory, p.VM.Disk),
		"upload and install the artifacts, configure and start CRI-O",
		"check the installed versions against the lock (drift check)",
	}
	if p.Test.Own() {
		out = append(out, "run envctl's "+string(profiles.TestImageVolume)+" test and report every step")
	}
	if file, ok := p.Test.UpstreamFile(); ok {
		out = append(out, "stop that CRI-O, install the locked bats and CRI-O test tree, and run upstream's test/"+file+" with it; every upstream test is one step, and all skipped is \"not tested\"")
	}
	return append(out, "tear down the VM, its volumes and its directory")
}

// WriteTable prints the plan for humans.
func (pl *Plan) WriteTable(w io.Writer) {
	fmt.Fprintf(w, "plan for %s\n", pl.Profile)
	if pl.LockErr != "" {
		fmt.Fprintf(w, "  lock: %s\n  `envctl up` writes it on first use (`--locked` refuses to).\n", pl.LockErr)
	} else {
		fmt.Fprintf(w, "  lock: %s (image %s)\n", pl.Lock, pl.Pinned)
	}
	if pl.ImageFrom != "" {
		fmt.Fprintf(w, "  image: %s\n", pl.ImageFrom)
	}
	fmt.Fprintln(w, "  steps:")
	for i, s := range pl.Steps {
		fmt.Fprintf(w, "    %d. %s\n", i+1, s)
	}
	for _, c := range pl.Cells {
		fmt.Fprintf(w, "cell %s\n", c.Name)
		for _, a := range c.Artifacts {
			fmt.Fprintf(w, "  %-11s %-8s from %s\n", a.Component, a.Label(), a.Source)
		}
		if len(c.Artifacts) == 0 {
			for _, n := range slices.Sorted(maps.Keys(c.Versions)) {
				fmt.Fprintf(w, "  %-11s %s\n", n, c.Versions[n])
			}
		}
		for _, f := range c.Warnings {
			fmt.Fprintf(w, "  WARNING: %s\n", f)
		}
	}
}

// Fetched is one component made present on the host by FetchAll.
type Fetched struct {
	Cell      string            `json:"cell"`
	Component string            `json:"component"`
	Version   string            `json:"version"`
	Source    profiles.Source   `json:"source"`
	Files     map[string]string `json:"files,omitempty"`
	CRIAPI    string            `json:"cri_api,omitempty"`
}

// FetchAll gets every component of every cell onto the host, without a VM.
func FetchAll(ctx context.Context, cells []lock.LockedCell, f Fetcher) ([]Fetched, error) {
	var out []Fetched
	for _, c := range cells {
		got, err := Fetch(ctx, c, f, nil)
		if err != nil {
			return nil, err
		}
		for _, p := range got.Parts {
			out = append(out, Fetched{Cell: c.Name, Component: p.Component, Version: p.Version, Source: p.Source,
				Files: p.Files.Binaries, CRIAPI: artifacts.CRIAPI(artifacts.Builds(p.Part, p.Files))})
		}
	}
	return out, nil
}

// WriteFetched prints FetchAll's result for humans.
func WriteFetched(w io.Writer, rows []Fetched) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CELL\tCOMPONENT\tVERSION\tSOURCE\tCRI-API\tFILES")
	for _, r := range rows {
		cri := r.CRIAPI
		if cri == "" {
			cri = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%v\n", r.Cell, r.Component, r.Version, r.Source, cri, slices.Sorted(maps.Keys(r.Files)))
	}
	_ = tw.Flush()
}
