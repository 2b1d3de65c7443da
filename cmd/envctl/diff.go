package main

import (
	"fmt"
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
		Long: `diff compares two lock files (or the locks of two profiles). It says first,
in a few lines, what differs ("cri-tools 1.34.0 → 1.30.0"), then lists, per
cell and component and for the image, every field that differs: version,
source commit, module sum, artifact and binary digests, the image's digests,
recipe and each package. Two locks of one cell each (two profiles) are
compared cell to cell; the cells of matrix locks are matched by their axis
values. Run it on the lock of a failing CI host and the
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
			r := diffReport{SchemaVersion: 1, Same: len(lock.Content(diffs)) == 0,
				Summary: lock.Summarize(files[0], files[1]), Differences: diffs}
			if r.Summary == nil {
				r.Summary = []string{}
			}
			if r.Differences == nil {
				r.Differences = []lock.Difference{}
			}
			if err := a.emit(r, func(w io.Writer) {
				for _, line := range r.Summary {
					fmt.Fprintln(w, line)
				}
				if len(r.Summary) > 0 {
					fmt.Fprintln(w)
				}
				lock.WriteDiff(w, "A", "B", diffs)
			}); err != nil {
				return err
			}
			if exitCode && !r.Same {
				return &shown{class: fault.TestFailed}
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&exitCode, "exit-code", false, "exit 1 when the locks pin different things (provenance alone does not count)")
	return cmd
}

// diffReport is diff's output: a few lines of what differs, then every
// field. Same is true when only provenance differs.
type diffReport struct {
	SchemaVersion int               `json:"schema_version" yaml:"schema_version"`
	Same          bool              `json:"same" yaml:"same"`
	Summary       []string          `json:"summary" yaml:"summary"`
	Differences   []lock.Difference `json:"differences" yaml:"differences"`
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
