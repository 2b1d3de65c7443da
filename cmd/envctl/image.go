package main

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/archive"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/images/ociartifact"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artifacts"
)

func newImageCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "image", Short: "Manage base images: ls, build, push, pull, export, import, rm, prune"}
	cmd.AddCommand(
		a.imageVerb("ls", "List catalog images and local builds, and whether they are cached", cobra.NoArgs, func(_ context.Context, st *images.Store, _ []string) error {
			rows, err := st.List()
			if err != nil {
				return err
			}
			return a.emit(rows, func(w io.Writer) { images.WriteListings(w, rows) })
		}),
		newImageBuildCmd(a), newImagePushCmd(a), newImagePullCmd(a),
		a.imageVerb("export FILE [NAME|PROFILE...]", "Write local images (by name, or the ones the profiles' locks pin; default: every lock's) as one OCI image layout tarball", cobra.MinimumNArgs(1),
			func(ctx context.Context, st *images.Store, args []string) error {
				return a.exportImages(ctx, st, args[0], args[1:])
			}),
		a.imageVerb("import FILE", "Read images from an OCI image layout tarball (from `envctl image export`), checking every blob", cobra.ExactArgs(1),
			func(ctx context.Context, st *images.Store, args []string) error {
				return a.importImages(ctx, st, args[0])
			}),
		a.imageVerb("rm NAME", "Forget a local build (its files go with `image prune`)", cobra.ExactArgs(1), func(ctx context.Context, st *images.Store, args []string) error {
			err := st.RemoveLocal(ctx, args[0])
			if err == nil {
				fmt.Fprintf(a.stdout, "removed local image %s\n", args[0])
			}
			return err
		}),
		a.imageVerb("prune", "Delete cached blobs that no local build and no profile's lock references (downloads, old builds)", cobra.NoArgs, a.pruneImages),
	)
	return cmd
}

// imageVerb is an image subcommand that runs with the image store and a
// context that ends on Ctrl-C or SIGTERM.
func (a *app) imageVerb(use, short string, args cobra.PositionalArgs, run func(ctx context.Context, st *images.Store, args []string) error) *cobra.Command {
	return &cobra.Command{Use: use, Short: short, Args: args,
		ValidArgsFunction: func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
			return catalog.Images().Names(), cobra.ShellCompDirectiveNoFileComp
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.withImages(cmd, func(ctx context.Context, st *images.Store) error { return run(ctx, st, args) })
		}}
}

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

func newImagePushCmd(a *app) *cobra.Command {
	var store string
	push := a.imageVerb("push [REPO] [NAME|PROFILE...]", "Push local images (by name, or the ones the profiles' locks pin; default: every lock's) to the image store REPO, tagged by disk digest", cobra.ArbitraryArgs,
		func(ctx context.Context, st *images.Store, args []string) error {
			if len(args) > 0 && isRepository(args[0]) {
				store, args = args[0], args[1:]
			}
			return a.pushImages(ctx, st, store, args)
		})
	push.Long = `push writes each image as an OCI artifact (disk, kernel and initrd, zstd-compressed,
and a description with the recipe, archive state and package set) into the
image store, tagged sha256-<disk digest>, so that ` + "`envctl up`" + ` on a machine
without the image pulls it by the digest its lock pins. The store is any
OCI registry repository: --image-store, image_store in the config, or
ENVCTL_IMAGE_STORE.`
	registerImageStore(push, &store)
	return push
}

func newImagePullCmd(a *app) *cobra.Command {
	var store string
	pull := a.imageVerb("pull NAME|PROFILE|REF", "Get an image: a catalog download (NAME), the image a profile's lock pins from the image store (PROFILE), or an artifact by reference (REF)", cobra.ExactArgs(1),
		func(ctx context.Context, st *images.Store, args []string) error {
			return a.pullImage(ctx, st, store, args[0])
		})
	registerImageStore(pull, &store)
	return pull
}

func (a *app) importImages(ctx context.Context, st *images.Store, file string) error {
	ls, err := st.Import(ctx, file)
	if err != nil {
		return err
	}
	return a.emit(ls, func(w io.Writer) {
		for _, l := range ls {
			fmt.Fprintf(w, "imported %s %s (archive state %s, %d packages) from %s\n", l.Name, l.Disk, l.Snapshot, len(l.Packages), file)
		}
	})
}

func (a *app) pruneImages(ctx context.Context, st *images.Store, _ []string) error {
	locks, err := a.locksOf(nil)
	if err != nil {
		return err
	}
	p, err := st.Prune(ctx, artifacts.Referenced(locks...)[cache.EntryBlob])
	if err != nil {
		return err
	}
	return a.emit(p, func(w io.Writer) {
		fmt.Fprintf(w, "removed %d blobs, freed %.1f MiB\n", len(p.Removed), float64(p.Freed)/(1<<20))
	})
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

// selectImages are the images named on the command line (local builds by
// name, or the image a profile's lock pins), or every lock's image.
func (a *app) selectImages(st *images.Store, names []string) ([]lock.Image, error) {
	var out []lock.Image
	seen := map[string]bool{}
	add := func(img lock.Image) {
		if img.Kind == lock.ImageLocal && !seen[img.Digest] {
			seen[img.Digest] = true
			out = append(out, img)
		}
	}
	if len(names) == 0 {
		locks, err := a.locksOf(nil)
		if err != nil {
			return nil, err
		}
		for _, f := range locks {
			add(f.Image)
		}
		if len(out) == 0 {
			return nil, fault.Inputf("no lock in the profile search path pins a local image; name a local build (`envctl image ls`) or a profile")
		}
		return out, nil
	}
	for _, n := range names {
		if l, ok := st.Current(n); ok {
			add(l.Pin())
			continue
		}
		f, err := a.lockOfProfile(n)
		if err != nil {
			return nil, fault.Inputf("%s is neither a local build (`envctl image ls`) nor a profile with a lock: %v", n, err)
		}
		if f.Image.Kind != lock.ImageLocal {
			return nil, fault.Inputf("%s pins the catalog download %s, which has its own URL: nothing to push or export", n, f.Image.Name)
		}
		add(f.Image)
	}
	return out, nil
}

// isRepository tells a registry repository (HOST[:PORT]/PATH) from a
// profile path on the command line.
func isRepository(arg string) bool {
	if !strings.Contains(arg, "/") || strings.HasSuffix(arg, ".yaml") || strings.HasSuffix(arg, ".yml") {
		return false
	}
	if _, err := os.Stat(arg); err == nil {
		return false
	}
	return true
}

func (a *app) lockOfProfile(name string) (*lock.File, error) {
	path, err := a.profiles().Find(name)
	if err != nil {
		return nil, err
	}
	return lock.Read(profiles.LockPathOf(path))
}

func (a *app) pushImages(ctx context.Context, st *images.Store, store string, names []string) error {
	if store == "" {
		return fault.Inputf("image push needs an image store: --image-store HOST[:PORT]/PATH, image_store in the config, or ENVCTL_IMAGE_STORE")
	}
	if _, err := ociartifact.ParseRepository(store); err != nil {
		return err
	}
	imgs, err := a.selectImages(st, names)
	if err != nil {
		return err
	}
	var pushed []string
	for _, img := range imgs {
		a.step("pushing %s %s to %s", img.Name, img.Digest, store)
		ref, err := st.Push(ctx, store, img)
		if err != nil {
			return err
		}
		pushed = append(pushed, ref)
	}
	return a.emit(pushed, func(w io.Writer) {
		for _, r := range pushed {
			fmt.Fprintf(w, "pushed %s\n", r)
		}
	})
}

// pullImage is `image pull NAME|PROFILE|REF`.
func (a *app) pullImage(ctx context.Context, st *images.Store, store, arg string) error {
	if _, ok := st.Catalog.Images[arg]; ok {
		p, err := st.Pull(ctx, arg)
		if err == nil {
			fmt.Fprintf(a.stdout, "%s %s\n", arg, p)
		}
		return err
	}
	if f, err := a.lockOfProfile(arg); err == nil {
		if store == "" {
			return fault.Inputf("image pull %s needs an image store to pull its lock's image from: --image-store HOST[:PORT]/PATH, image_store in the config, or ENVCTL_IMAGE_STORE", arg)
		}
		ref, err := st.PullLocked(ctx, store, f.Image, true)
		if err != nil {
			return err
		}
		return a.emit(map[string]string{"image": f.Image.Name, "digest": f.Image.Digest, "ref": ref}, func(w io.Writer) {
			fmt.Fprintf(w, "pulled %s %s from %s\n", f.Image.Name, f.Image.Digest, ref)
		})
	}
	if !isRepository(arg) {
		return fault.Inputf("image pull %s: not a catalog image (%s), a profile with a lock, or a reference HOST[:PORT]/PATH:TAG", arg, strings.Join(st.Catalog.Names(), ", "))
	}
	l, err := st.PullRef(ctx, arg)
	if err != nil {
		return err
	}
	return a.emit(l, func(w io.Writer) {
		fmt.Fprintf(w, "pulled %s %s (archive state %s, %d packages) from %s\n", l.Name, l.Disk, l.Snapshot, len(l.Packages), arg)
	})
}

func (a *app) exportImages(ctx context.Context, st *images.Store, file string, names []string) error {
	imgs, err := a.selectImages(st, names)
	if err != nil {
		return err
	}
	a.step("exporting %d images to %s", len(imgs), file)
	if err := st.Export(ctx, file, imgs); err != nil {
		return err
	}
	return a.emit(imgs, func(w io.Writer) {
		for _, img := range imgs {
			fmt.Fprintf(w, "exported %s %s to %s\n", img.Name, img.Digest, file)
		}
	})
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

// withImages runs an image verb with the image store and a context that
// ends on Ctrl-C or SIGTERM.
func (a *app) withImages(cmd *cobra.Command, run func(ctx context.Context, st *images.Store) error) error {
	st, err := a.images()
	if err != nil {
		return err
	}
	ctx, stop := a.signalContext(cmd)
	defer stop()
	return run(ctx, st)
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
	l, err := st.Build(ctx, name, src, a.stderr)
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
