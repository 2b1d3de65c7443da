package main

import (
	"context"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/lock"
)

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
			locker, err := a.locker()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 30*time.Minute)
			defer cancel()
			f, err := locker(ctx, p)
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
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", art.Component, art.Version, art.Source, art.Pin())
				}
				_ = tw.Flush()
			})
		},
	}
}
