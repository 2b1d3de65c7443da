package main

import (
	"io"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/lock"
)

// loadResolved loads a profile and resolves every cell's versions.
func (a *app) loadResolved(nameOrPath string) (*profiles.Profile, []profiles.ResolvedCell, error) {
	p, err := a.profiles().Load(nameOrPath)
	if err != nil {
		return nil, nil, err
	}
	cells, err := profiles.Resolve(catalog.Default(), p)
	return p, cells, err
}

func newShowCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:               "show PROFILE",
		Short:             "Show a profile with every version resolved (one entry per matrix cell)",
		Args:              exactlyOneProfile,
		ValidArgsFunction: a.completeProfiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, cells, err := a.loadResolved(args[0])
			if err != nil {
				return err
			}
			// A current lock says what each version really is.
			if lf, err := lock.ForProfile(p, a.arch()); err == nil {
				for i, c := range cells {
					lc, err := lf.Cell(p, c.Name)
					if err != nil {
						continue
					}
					for j, r := range c.Components {
						if art, ok := lc.Component(r.Role); ok && art.Label() != r.Version {
							cells[i].Components[j].Label = art.Label()
						}
					}
				}
			}
			out := struct {
				Profile string                  `json:"profile" yaml:"profile"`
				Path    string                  `json:"path" yaml:"path"`
				Hash    string                  `json:"profile_sha256" yaml:"profile_sha256"`
				Cells   []profiles.ResolvedCell `json:"cells" yaml:"cells"`
			}{p.Name, p.Path, p.Hash(), cells}
			return a.emit(out, func(w io.Writer) { writeResolved(w, p, cells) })
		},
	}
}
