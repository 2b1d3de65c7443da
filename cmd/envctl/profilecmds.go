package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/compat"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/fault"
)

func completeProfiles(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	var names []string
	for _, e := range profiles.List() {
		names = append(names, e.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

func exactlyOneProfile(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return fault.Inputf("%s needs exactly one PROFILE (a name from `envctl profiles` or a path to a YAML file), got %d arguments", cmd.CommandPath(), len(args))
	}
	return nil
}

func newProfilesCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:     "profiles",
		Aliases: []string{"profile", "ls-profiles"},
		Short:   "List the profiles envctl can find",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			list := profiles.List()
			return a.emit(list, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tPATH\tSTATUS")
				for _, e := range list {
					status := "ok"
					if e.Err != "" {
						status = "invalid: " + e.Err
					} else if _, err := os.Stat(strings.TrimSuffix(e.Path, ".yaml") + ".lock"); err == nil {
						status = "ok, locked"
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\n", e.Name, e.Path, status)
				}
				tw.Flush()
				if len(list) == 0 {
					fmt.Fprintf(w, "no profiles found in %s\n", strings.Join(profiles.SearchDirs(), ", "))
				}
			})
		},
	}
}

// loadResolved loads a profile and resolves every cell's versions.
func (a *app) loadResolved(nameOrPath string) (*profiles.Profile, []profiles.ResolvedCell, error) {
	p, err := profiles.Load(nameOrPath)
	if err != nil {
		return nil, nil, err
	}
	cells, err := profiles.Resolve(a.catalog(), p)
	if err != nil {
		return nil, nil, fault.AsInput(err)
	}
	return p, cells, nil
}

func newShowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "show PROFILE",
		Short:             "Show a profile with every version resolved (one entry per matrix cell)",
		Args:              exactlyOneProfile,
		ValidArgsFunction: completeProfiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, cells, err := a.loadResolved(args[0])
			if err != nil {
				return err
			}
			out := struct {
				Profile string                  `json:"profile" yaml:"profile"`
				Path    string                  `json:"path" yaml:"path"`
				Hash    string                  `json:"profile_sha256" yaml:"profile_sha256"`
				Cells   []profiles.ResolvedCell `json:"cells" yaml:"cells"`
			}{p.Name, p.Path, p.Hash(), cells}
			return a.emit(out, func(w io.Writer) {
				fmt.Fprintf(w, "profile %s (%s)\n", p.Name, p.Path)
				if p.Description != "" {
					fmt.Fprintf(w, "  %s\n", p.Description)
				}
				fmt.Fprintf(w, "image %s, vm %d cpus %s memory %s disk, test %s\n\n", p.Image, p.VM.CPUs, p.VM.Memory, p.VM.Disk, p.Test)
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "CELL\tROLE\tCOMPONENT\tSPEC\tVERSION\tSOURCE")
				for _, c := range cells {
					for _, r := range c.Components {
						fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, r.Role, r.Name, r.Spec, r.Version, r.Source)
					}
				}
				tw.Flush()
			})
		},
	}
}

func (a *app) resolver() (*lock.Resolver, error) {
	c, err := a.cache()
	if err != nil {
		return nil, err
	}
	return &lock.Resolver{
		Catalog:   a.catalog(),
		Images:    a.images(),
		Cache:     c,
		HTTP:      &http.Client{Timeout: 60 * time.Second},
		Arch:      a.arch(),
		Mirror:    os.Getenv("ENVCTL_MIRROR"),
		ModuleSum: lock.GoModuleSum,
	}, nil
}

func newLockCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "lock PROFILE",
		Short:             "Pin every artifact of a profile (URL and sha256, module sum, image digest) in PROFILE.lock",
		Args:              exactlyOneProfile,
		ValidArgsFunction: completeProfiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := profiles.Load(args[0])
			if err != nil {
				return err
			}
			r, err := a.resolver()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Minute)
			defer cancel()
			f, err := r.Lock(ctx, p)
			if err != nil {
				return err
			}
			if err := lock.Write(p.LockPath(), f); err != nil {
				return err
			}
			return a.emit(struct {
				Lock string     `json:"lock"`
				File *lock.File `json:"content"`
			}{p.LockPath(), f}, func(w io.Writer) {
				fmt.Fprintf(w, "wrote %s: image %s (%s), %d artifacts, %d cells\n", p.LockPath(), f.Image.Name, f.Image.Digest, len(f.Artifacts), len(f.Cells))
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "COMPONENT\tVERSION\tSOURCE\tPIN")
				for _, art := range f.Artifacts {
					pin := art.SHA256
					switch {
					case art.ModuleSum != "":
						pin = art.Module + " " + art.ModuleSum
					case art.Package != "":
						pin = "guest package " + art.Package
					case art.Bundle != "":
						pin = "in " + art.Bundle
					case pin != "":
						pin = "sha256:" + pin
					}
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", art.Component, art.Version, art.Source, pin)
				}
				tw.Flush()
			})
		},
	}
}

func newCatalogCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "catalog [COMPONENT]",
		Short: "List the component versions envctl knows",
		Args:  cobra.MaximumNArgs(1),
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return a.catalog().Names(), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			cat := a.catalog()
			names := cat.Names()
			if len(args) == 1 {
				if _, err := cat.Get(args[0]); err != nil {
					return fault.AsInput(err)
				}
				names = args
			}
			type entry struct {
				Component string   `json:"component"`
				Versions  []string `json:"versions"`
				Release   string   `json:"release_url,omitempty"`
				GoModule  string   `json:"gomod,omitempty"`
			}
			var out []entry
			for _, n := range names {
				c, _ := cat.Get(n)
				e := entry{Component: n, Versions: c.Sorted()}
				if c.Release != nil {
					e.Release = c.Release.URL
				}
				if c.GoMod != nil {
					e.GoModule = c.GoMod.Module
				}
				out = append(out, e)
			}
			return a.emit(out, func(w io.Writer) {
				for _, e := range out {
					fmt.Fprintf(w, "%s: %s\n", e.Component, strings.Join(e.Versions, " "))
					if e.Release != "" {
						fmt.Fprintf(w, "  release: %s\n", e.Release)
					}
					if e.GoModule != "" {
						fmt.Fprintf(w, "  gomod:   %s\n", e.GoModule)
					}
				}
			})
		},
	}
}

// planCell is what `up` would do for one cell.
type planCell struct {
	Name      string            `json:"name"`
	Versions  map[string]string `json:"versions"`
	Artifacts []lock.Artifact   `json:"artifacts,omitempty"`
	Warnings  []compat.Finding  `json:"warnings,omitempty"`
}

func newPlanCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "plan PROFILE",
		Short:             "Dry run: print what `envctl up` would do, and predicted incompatibilities",
		Args:              exactlyOneProfile,
		ValidArgsFunction: completeProfiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, cells, err := a.loadResolved(args[0])
			if err != nil {
				return err
			}
			lf, lockErr := lock.ForProfile(p, a.arch())
			var out []planCell
			for _, c := range cells {
				pc := planCell{Name: c.Name, Versions: map[string]string{}}
				for _, r := range c.Components {
					pc.Versions[r.Name] = r.Version
				}
				if lf != nil {
					arts, err := lf.CellArtifacts(c.Name)
					if err != nil {
						return err
					}
					for _, role := range profiles.Roles {
						if art, ok := arts[role]; ok {
							pc.Artifacts = append(pc.Artifacts, art)
						}
					}
				}
				pc.Warnings = compat.Predict(p.Test, pc.Versions)
				pc.Warnings = append(pc.Warnings, a.predictFromBinaries(cmd.Context(), lf, c.Name, p.Test)...)
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
					fmt.Fprintf(w, "  lock: %s\n  `envctl up` would refuse to run until then.\n", lockErr)
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
						for _, n := range sortedKeys(c.Versions) {
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
	if p.Test != "none" {
		steps = append(steps, "run the "+p.Test+" test and report every step")
	}
	return append(steps, "tear down the VM, its volumes and its directory")
}
