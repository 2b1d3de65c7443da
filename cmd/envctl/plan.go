package main

import (
	"errors"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/cellrun"
)

func newPlanCmd(a *app) *cobra.Command {
	var test profiles.TestName
	var store string
	cmd := &cobra.Command{
		Use:               "plan PROFILE",
		Short:             "Dry run: print what `envctl up` would do, and predicted incompatibilities",
		Args:              exactlyOneProfile,
		ValidArgsFunction: a.completeProfiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			p, cells, err := a.loadResolved(args[0])
			if err != nil {
				return err
			}
			fetcher, err := a.fetcher()
			if err != nil {
				return err
			}
			lf, lockErr := lock.ForProfile(p, a.arch())
			var missing *lock.MissingError
			if lockErr != nil && !errors.As(lockErr, &missing) {
				// up would refuse this lock: so does its dry run.
				return lockErr
			}
			if test != "" {
				p.Test = test // after the lock check: the lock pins the same artifacts for every test
			}
			pl, err := cellrun.MakePlan(p, cells, lf, lockErr, fetcher)
			if err != nil {
				return err
			}
			if lf != nil {
				st, err := a.images()
				if err != nil {
					return err
				}
				pl.ImageFrom = st.Describe(lf.Image, a.imageSources(store))
			}
			return a.emit(pl, pl.WriteTable)
		},
	}
	registerImageStore(cmd, &store)
	cmd.Flags().Var(&test, "test", "plan for these test suites instead of the profile's (see `envctl up --help`)")
	return cmd
}
