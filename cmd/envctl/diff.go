package main

import (
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/lock"
)

func newDiffCmd(a *app) *cobra.Command {
	var exitCode bool
	cmd := &cobra.Command{
		Use:   "diff LOCK_A LOCK_B",
		Short: "Show what differs between two locks: image, packages, versions, commits, digests",
		Long: `diff compares two lock files (or the locks of two profiles) and lists, per
cell and component and for the image, every field that differs: version,
source commit, module sum, artifact and binary digests, the image's digests,
recipe and each package. Run it on the lock of a failing CI host and the
lock of a passing workstation.

The image's archive state (snapshot) is provenance: it is listed, marked
as such, and two locks that differ only there pin the same environment.

With --exit-code it exits 1 when the locks pin different things, like
` + "`git diff --exit-code`" + `.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var files [2]*lock.File
			for i, arg := range args {
				f, err := a.readLockArg(arg)
				if err != nil {
					return err
				}
				files[i] = f
			}
			diffs := lock.Diff(files[0], files[1])
			if err := a.emit(diffs, func(w io.Writer) { lock.WriteDiff(w, "A", "B", diffs) }); err != nil {
				return err
			}
			if exitCode && len(lock.Content(diffs)) > 0 {
				return &shown{class: fault.TestFailed}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&exitCode, "exit-code", false, "exit 1 when the locks pin different things (provenance alone does not count)")
	return cmd
}

// readLockArg reads a lock file, or the lock of a profile (name or path).
func (a *app) readLockArg(arg string) (*lock.File, error) {
	path := arg
	if !strings.HasSuffix(arg, ".lock") {
		p, err := a.profiles().Find(arg)
		if err != nil {
			return nil, err
		}
		path = profiles.LockPathOf(p)
	}
	f, err := lock.Read(path)
	if os.IsNotExist(err) {
		return nil, fault.Inputf("%s: no such lock file; pass a .lock file or a profile that has one (`envctl lock PROFILE` writes it)", path)
	}
	return f, err
}
