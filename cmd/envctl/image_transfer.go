package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/ociartifact"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/lock"
)

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
