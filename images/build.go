package images

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/provision/fault"
	"github.com/envctl/envctl/scripts"
)

// Build runs the image's build recipe (a script in scripts/) and records the
// result in the local image registry. Output of the script goes to log.
func Build(ctx context.Context, c *cache.Cache, cat *Catalog, name string, log io.Writer) (Local, error) {
	recipe, ok := cat.Builds[name]
	if !ok {
		var names []string
		for n := range cat.Builds {
			names = append(names, n)
		}
		return Local{}, fault.Inputf("image %q has no local build recipe; buildable: %s", name, strings.Join(names, ", "))
	}
	unlock, err := c.Lock(ctx, "build-image-"+name)
	if err != nil {
		return Local{}, err
	}
	defer unlock()
	work, err := os.MkdirTemp(filepath.Join(c.Dir, "tmp"), "image-build-")
	if err != nil {
		return Local{}, fault.Infraf("image build: %w", err)
	}
	defer os.RemoveAll(work)
	script, err := scripts.Extract(filepath.Join(work, "scripts"), recipe.Script)
	if err != nil {
		return Local{}, fault.Infraf("image build: %w", err)
	}
	out := filepath.Join(work, "out")
	cmd := exec.CommandContext(ctx, "bash", append([]string{script, out}, recipe.Args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return Local{}, fault.Infraf("image build %s: %s failed: %w (its output is above)", name, recipe.Script, err)
	}
	l := Local{Name: name, Format: "raw", Built: time.Now().UTC(), FastSeed: true, Recipe: scripts.RecipeHash()}
	for _, part := range []struct {
		file string
		dst  *string
	}{{"disk.raw", &l.Disk}, {"vmlinuz", &l.Kernel}, {"initrd.img", &l.Initrd}} {
		d, _, err := c.Import(ctx, filepath.Join(out, part.file), true)
		if err != nil {
			return Local{}, err
		}
		*part.dst = d.String()
	}
	l.Packages = readPackages(filepath.Join(out, "packages.txt"))
	if err := saveLocal(ctx, c, func(m map[string]Local) { m[name] = l }); err != nil {
		return Local{}, err
	}
	return l, nil
}

func readPackages(path string) map[string]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if name, ver, ok := strings.Cut(sc.Text(), " "); ok {
			out[name] = ver
		}
	}
	return out
}

// RemoveLocal forgets a local build (its blobs go with `envctl image prune`).
func RemoveLocal(ctx context.Context, c *cache.Cache, name string) error {
	locals, err := LocalImages(c)
	if err != nil {
		return err
	}
	if _, ok := locals[name]; !ok {
		return fault.Inputf("image %q has no local build to remove", name)
	}
	return saveLocal(ctx, c, func(m map[string]Local) { delete(m, name) })
}

// InUse lists the blob digests referenced by local builds.
func InUse(c *cache.Cache) map[string]bool {
	used := map[string]bool{}
	locals, _ := LocalImages(c)
	for _, l := range locals {
		used[l.Disk], used[l.Kernel], used[l.Initrd] = true, true, true
	}
	return used
}

var _ = fmt.Sprint
