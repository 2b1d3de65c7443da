package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles/lock"
)

func newLockCmd(a *app) *cobra.Command {
	var allowMoved bool
	cmd := &cobra.Command{
		Use:               "lock PROFILE",
		Short:             "Pin every artifact of a profile (URL and sha256, module sum, image digest) in PROFILE.lock",
		Args:              exactlyOneProfile,
		ValidArgsFunction: a.completeProfiles,
		RunE: func(cmd *cobra.Command, args []string) error {
			l := a.profiles()
			p, err := l.Load(args[0])
			if err != nil {
				return err
			}
			locker, err := a.locker(allowMoved, a.newImage(a.imageSources("")))
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Minute)
			defer cancel()
			f, err := locker(ctx, p)
			if err != nil {
				return err
			}
			if !lock.Unchanged(p.LockPath(), f) {
				// A built-in profile's new lock goes to a copy of the
				// user's, never to the binary's.
				adopted, err := l.Adopt(p)
				if err != nil {
					return err
				}
				if adopted != "" {
					a.step("copied the built-in profile %s to %s: it is yours now, and it wins over the built-in one", p.Name, adopted)
				}
			}
			changed, err := lock.Update(p.LockPath(), f)
			if err != nil {
				return err
			}
			return a.emit(struct {
				Lock    string     `json:"lock"`
				Changed bool       `json:"changed"`
				File    *lock.File `json:"content"`
			}{p.LockPath(), changed, f}, func(w io.Writer) {
				f.WriteTable(w, p.LockPath())
				if !changed {
					fmt.Fprintf(w, "%s is unchanged: it already pins exactly this\n", p.LockPath())
				}
			})
		},
	}
	cmd.Flags().BoolVar(&allowMoved, "allow-moved-tags", false, "accept a Go module version whose commit is not upstream's release commit (the tag moved after the proxy cached it); the lock records both commits. Pinning `commit:` in the profile is the explicit alternative")
	return cmd
}
