package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/lock"
)

// defaultProfile is the profile `make up` runs and `init` starts from.
const defaultProfile = "crio-1.34-runc"

var nameLineRE = regexp.MustCompile(`(?m)^name:.*$`)

func newInitCmd(a *app) *cobra.Command {
	var from, dir string
	var force bool
	cmd := &cobra.Command{
		Use:   "init NAME",
		Short: "Write a profile and its lock into ./profiles, to edit and commit",
		Long: `init copies a profile (a built-in one, by default ` + defaultProfile + `) and
its lock to DIR/NAME.yaml and DIR/NAME.lock under the new name. The copy is
yours: it wins over the built-in profile of the same name, and a lock made
again (envctl lock NAME) is written next to it. The lock still pins exactly
what the original pinned until you change the profile.`,
		Example: `  envctl init my-stack
  envctl init crio-crun --from crio-1.34-crun
  envctl init crio-1.34-runc          # a copy of the built-in profile, to edit`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: cobra.NoFileCompletions,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.initProfile(args[0], from, dir, force)
		},
	}
	cmd.Flags().StringVar(&from, "from", defaultProfile, "the profile to start from: a name (built-in or found), builtin:NAME, or a path")
	cmd.Flags().StringVar(&dir, "dir", "profiles", "the directory to write into")
	cmd.Flags().BoolVar(&force, "force", false, "replace NAME.yaml and NAME.lock if they exist")
	_ = cmd.RegisterFlagCompletionFunc("from", a.completeProfiles)
	return cmd
}

// initProfile writes dir/name.yaml and its lock from the profile from.
func (a *app) initProfile(name, from, dir string, force bool) error {
	if !profiles.ValidName(name) {
		return fault.Inputf("init %q: not a valid profile name; use letters, digits, '.', '_' and '-'", name)
	}
	l := a.profiles()
	src, err := l.Find(from)
	if err != nil {
		return err
	}
	data, err := os.ReadFile(src)
	if err != nil {
		return fault.Inputf("init: read %s: %v", src, err)
	}
	p, err := l.LoadFile(src)
	if err != nil {
		return err
	}
	dstProfile := filepath.Join(dir, name+".yaml")
	dstLock := profiles.LockPathOf(dstProfile)
	if !force {
		for _, f := range []string{dstProfile, dstLock} {
			if _, err := os.Stat(f); err == nil {
				return fault.Inputf("init: %s exists already; pick another NAME, or pass --force to replace it", f)
			}
		}
	}
	if nameLineRE.Match(data) {
		data = nameLineRE.ReplaceAll(data, []byte("name: "+name))
	} else {
		data = append([]byte("name: "+name+"\n"), data...)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fault.Inputf("init: %v", err)
	}
	if err := os.WriteFile(dstProfile, data, 0o644); err != nil {
		return fault.Inputf("init: %v", err)
	}
	wrote := []string{dstProfile}
	f, err := lock.Read(profiles.LockPathOf(src))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return err
	default:
		// The cell of a profile without a matrix is the profile.
		for i := range f.Cells {
			if f.Cells[i].Name == p.Name {
				f.Cells[i].Name = name
			}
		}
		f.Profile = name
		if err := lock.Write(dstLock, f); err != nil {
			return err
		}
		wrote = append(wrote, dstLock)
	}
	out := struct {
		From  string   `json:"from"`
		Wrote []string `json:"wrote"`
	}{src, wrote}
	return a.emit(out, func(w io.Writer) {
		for _, f := range wrote {
			fmt.Fprintf(w, "wrote %s\n", f)
		}
		fmt.Fprintf(w, "from %s (%s); edit it, run `envctl lock %s` after a change, and commit both files\n", from, src, name)
	})
}
