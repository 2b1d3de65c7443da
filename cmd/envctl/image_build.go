package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/archive"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/lock"
)

func newImageBuildCmd(a *app) *cobra.Command {
	var bf buildFlags
	build := &cobra.Command{Use: "build NAME [PROFILE...]", Short: "Build an image locally (mmdebstrap, reproducibly) and register it under NAME", Args: cobra.MinimumNArgs(1),
		Long: `build makes the image with its recipe, bit-reproducibly: the same recipe and
the same package versions give the same disk, kernel and initrd digests on
any machine. It records the Debian archive state the packages came from
(the newest Release date it read, as a snapshot.debian.org timestamp), and
says which packages changed since the previous build.

The packages come from Debian's own mirrors, or from --mirror URL (http or
file://, ENVCTL_DEBIAN_MIRROR), or from the snapshot archive at
--snapshot YYYYMMDDTHHMMSSZ (snapshot.debian.org, or ENVCTL_DEBIAN_SNAPSHOT_URL
for a copy in its layout).

With --update, the locks that pin this image (of the PROFILEs given, or of
every profile in the search path) take the new build: its digests, recipe,
archive state and package set. Without it, a lock that pins another build
keeps its pin: ` + "`envctl up`" + ` re-pins it, saying which packages moved, when
the pinned build cannot be had.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withImages(cmd, func(ctx context.Context, st *images.Store) error {
				return a.buildImage(ctx, st, args, bf)
			})
		}}
	bf.register(build)
	return build
}

// buildFlags are `image build`'s flags.
type buildFlags struct {
	ifNeeded, update bool
	snapshot, mirror string
}

func (f *buildFlags) register(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&f.ifNeeded, "if-needed", false, "build only when there is no current local build (none, or one made by other scripts)")
	cmd.Flags().BoolVar(&f.update, "update", false, "write the new build into the locks that pin this image")
	cmd.Flags().StringVar(&f.snapshot, "snapshot", "", "build from the snapshot archive at this archive state (YYYYMMDDTHHMMSSZ, as a lock's image.snapshot records it)")
	cmd.Flags().StringVar(&f.mirror, "mirror", "", "build from this Debian mirror (http(s):// or file:///, laid out as a Debian archive) instead of Debian's own (ENVCTL_DEBIAN_MIRROR)")
	_ = cmd.Flags().SetAnnotation("mirror", configAnnotation, []string{"debian-mirror"})
	_ = cmd.Flags().SetAnnotation("snapshot", configAnnotation, []string{"debian-snapshot"})
}

// source is where the build takes its packages from.
func (f buildFlags) source(ctx context.Context, st *images.Store, name, snapshotBase string) (archive.Source, error) {
	suite, err := st.Suite(name)
	if err != nil {
		return archive.Source{}, err
	}
	switch {
	case f.snapshot != "" && f.mirror != "":
		return archive.Source{}, fault.Inputf("image build: give --snapshot or --mirror, not both")
	case f.snapshot != "":
		if _, err := archive.ParseStamp(f.snapshot); err != nil {
			return archive.Source{}, fault.Inputf("image build %s --snapshot: %v", name, err)
		}
		src, err := archive.FindSnapshot(ctx, cmp.Or(snapshotBase, archive.DefaultSnapshotBase), f.snapshot, suite)
		if err != nil {
			return archive.Source{}, fault.Infraf("image build %s --snapshot %s: %w", name, f.snapshot, err)
		}
		return src, nil
	case f.mirror != "":
		src, err := archive.MirrorSource(ctx, f.mirror, suite)
		if err != nil {
			return archive.Source{}, fault.Inputf("image build %s --mirror: %v", name, err)
		}
		return src, nil
	}
	return archive.LiveSource(suite), nil
}

// updateImageLocks writes the image's current build into the locks (of the
// named profiles, or all) that pin it.
func (a *app) updateImageLocks(st *images.Store, name string, profileNames []string) ([]string, error) {
	img, err := st.Resolve(name)
	if err != nil {
		return nil, err
	}
	paths, err := a.lockPathsOf(profileNames)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, p := range paths {
		f, err := lock.Read(p)
		if err != nil || f.Image.Name != name {
			continue
		}
		f.Image = img
		changed, err := lock.Update(p, f)
		if err != nil {
			return out, err
		}
		if changed {
			out = append(out, p)
		}
	}
	return out, nil
}

// buildImage is `image build NAME [PROFILE...]`.
func (a *app) buildImage(ctx context.Context, st *images.Store, args []string, f buildFlags) error {
	name := args[0]
	prev, err := st.Locals()
	if err != nil {
		return err
	}
	if l, ok := st.Current(name); f.ifNeeded && ok && !f.update {
		fmt.Fprintf(a.stdout, "image %s is up to date (built %s)\n", name, l.Built.Format(time.RFC3339))
		return nil
	}
	src, err := f.source(ctx, st, name, a.configString("debian-snapshot-url"))
	if err != nil {
		return err
	}
	a.step("building image %s from %s (takes a few minutes)", name, src)
	start := time.Now()
	w, done := a.task("image build " + name)
	l, err := st.Build(ctx, name, src, w)
	done(err)
	if err != nil {
		return err
	}
	if old, ok := prev[name]; ok {
		if d := images.PackageChanges(old.Packages, l.Packages); len(d) > 0 {
			a.step("packages changed since the previous build: %s", strings.Join(d, ", "))
		}
		if old.Disk != l.Disk {
			a.step("the disk digest changed: %s → %s", old.Disk, l.Disk)
		}
	}
	var updated []string
	if f.update {
		if updated, err = a.updateImageLocks(st, name, args[1:]); err != nil {
			return err
		}
	}
	return a.emit(l, func(w io.Writer) {
		fmt.Fprintf(w, "built %s in %s: disk %s, kernel %s, initrd %s, %d packages, archive state %s\n", l.Name, time.Since(start).Round(time.Second), l.Disk, l.Kernel, l.Initrd, len(l.Packages), l.Snapshot)
		for _, p := range updated {
			fmt.Fprintf(w, "updated %s\n", p)
		}
	})
}
