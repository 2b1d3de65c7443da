package main

import (
	"fmt"
	"io"
	"maps"
	"slices"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/compat"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/cellrun"
)

// planCell is what `up` would do for one cell.
type planCell struct {
	Name      string            `json:"name"`
	Versions  map[string]string `json:"versions"`
	Artifacts []lock.Part       `json:"artifacts,omitempty"`
	Warnings  []compat.Finding  `json:"warnings,omitempty"`
}

func newPlanCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "plan PROFILE",
		Short:             "Dry run: print what `envctl up` would do, and predicted incompatibilities",
		Args:              exactlyOneProfile,
		ValidArgsFunction: completeProfiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, cells, err := loadResolved(args[0])
			if err != nil {
				return err
			}
			fetcher, err := a.fetcher()
			if err != nil {
				return err
			}
			lf, lockErr := lock.ForProfile(p, a.arch())
			var out []planCell
			for _, c := range cells {
				pc := planCell{Name: c.Name, Versions: c.Versions()}
				if lockErr == nil {
					lc, err := lf.Cell(p, c.Name)
					if err != nil {
						return err
					}
					pc.Artifacts = lc.Components
					pc.Warnings = cellrun.Predict(lc, fetcher)
				} else {
					pc.Warnings = compat.Predict(p.Test, pc.Versions, nil)
				}
				out = append(out, pc)
			}
			result := struct {
				Profile string     `json:"profile"`
				Lock    string     `json:"lock"`
				LockErr string     `json:"lock_error,omitempty"`
				Image   string     `json:"image"`
				Steps   []string   `json:"steps"`
				Cells   []planCell `json:"cells"`
			}{Profile: p.Name, Lock: p.LockPath(), Image: p.Image, Cells: out, Steps: upSteps(p)}
			if lockErr != nil {
				result.LockErr = lockErr.Error()
			}
			return a.emit(result, func(w io.Writer) {
				fmt.Fprintf(w, "plan for %s\n", p.Name)
				if lockErr != nil {
					fmt.Fprintf(w, "  lock: %s\n  `envctl up` writes it on first use (`--locked` refuses to).\n", lockErr)
				} else {
					fmt.Fprintf(w, "  lock: %s (image %s %s)\n", p.LockPath(), lf.Image.Name, lf.Image.Digest)
				}
				fmt.Fprintln(w, "  steps:")
				for i, s := range result.Steps {
					fmt.Fprintf(w, "    %d. %s\n", i+1, s)
				}
				for _, c := range out {
					fmt.Fprintf(w, "cell %s\n", c.Name)
					for _, art := range c.Artifacts {
						fmt.Fprintf(w, "  %-11s %-8s from %s\n", art.Component, art.Version, art.Source)
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
			})
		},
	}
}

func upSteps(p *profiles.Profile) []string {
	steps := []string{
		fmt.Sprintf("fetch or build the locked artifacts and image %s (cached by digest)", p.Image),
		fmt.Sprintf("boot a throwaway VM (%d vCPU, %s memory, %s disk) with a fresh SSH key and pinned host key", p.VM.CPUs, p.VM.Memory, p.VM.Disk),
		"upload and install the artifacts, configure and start CRI-O",
		"check the installed versions against the lock (drift check)",
	}
	if p.Test != profiles.TestNone {
		steps = append(steps, "run the "+string(p.Test)+" test and report every step")
	}
	return append(steps, "tear down the VM, its volumes and its directory")
}
