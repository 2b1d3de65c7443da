package main

import (
	"slices"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/envctl/envctl/profiles"
)

// registerCompletions completes, on a command that has them, the
// flags whose values are known: every enum flag, --test, and --cell or --cells
// (the cells of the profile named first); and image pull's argument (a
// catalog or local image, or a profile).
func (a *app) registerCompletions(c *cobra.Command) {
	if c.Flags().Lookup("test") != nil {
		tests := []string{string(profiles.TestImageVolume), string(profiles.TestUpstream), "upstream:" + profiles.UpstreamDefaultFile, string(profiles.TestBoth), string(profiles.TestNone)}
		_ = c.RegisterFlagCompletionFunc("test", fixedCompletion(tests...))
	}
	// Every enum flag (newEnum) completes its values.
	c.LocalFlags().VisitAll(func(f *pflag.Flag) {
		if e, ok := f.Value.(interface{ choices() []string }); ok {
			if _, has := c.GetFlagCompletionFunc(f.Name); !has {
				_ = c.RegisterFlagCompletionFunc(f.Name, fixedCompletion(e.choices()...))
			}
		}
	})
	for _, name := range []string{"cell", "cells"} {
		if c.Flags().Lookup(name) != nil {
			_ = c.RegisterFlagCompletionFunc(name, a.completeCells)
		}
	}
	if c.Name() == "pull" && c.Parent() != nil && c.Parent().Name() == "image" {
		c.ValidArgsFunction = a.completeImagesAndProfiles
	}
}

// completeCells lists the cells of the profile given as the first argument.
func (a *app) completeCells(_ *cobra.Command, args []string, _ string) ([]string, cobra.ShellCompDirective) {
	if len(args) == 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	p, err := a.profiles().Load(args[0])
	if err != nil {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	var names []string
	for _, cell := range p.Cells() {
		names = append(names, cell.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

// completeImagesAndProfiles lists image names and profiles (image pull).
func (a *app) completeImagesAndProfiles(cmd *cobra.Command, args []string, s string) ([]string, cobra.ShellCompDirective) {
	if len(args) > 0 {
		return nil, cobra.ShellCompDirectiveNoFileComp
	}
	names, _ := a.completeProfiles(cmd, args, s)
	if st, err := a.images(); err == nil {
		if rows, err := st.List(); err == nil {
			for _, r := range rows {
				if !slices.Contains(names, r.Name) {
					names = append(names, r.Name)
				}
			}
		}
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}
