package images

import (
	"bufio"
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/envctl/envctl/profiles/fault"
	"github.com/envctl/envctl/scripts"
)

// Build runs the image's build recipe (a script in scripts/) and records
// the result in the local image registry. The script's output goes to log.
func (s *Store) Build(ctx context.Context, name string, log io.Writer) (Local, error) {
	recipe, ok := s.Catalog.Builds[name]
	if !ok {
		var names []string
		for n := range s.Catalog.Builds {
			names = append(names, n)
		}
		slices.Sort(names)
		return Local{}, fault.Inputf("image %q has no local build recipe; buildable: %s", name, strings.Join(names, ", "))
	}
	unlock, err := s.Cache.Lock(ctx, "build-image-"+name)
	if err != nil {
		return Local{}, err
	}
	defer unlock()
	work, err := os.MkdirTemp(filepath.Join(s.Cache.Dir, "tmp"), "image-build-")
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
	l := Local{Name: name, Format: "raw", Built: time.Now().UTC(), FastSeed: true, Recipe: s.recipeHash(name)}
	for _, part := range []struct {
		file string
		dst  *string
	}{{"disk.raw", &l.Disk}, {"vmlinuz", &l.Kernel}, {"initrd.img", &l.Initrd}} {
		d, _, err := s.Cache.Import(ctx, filepath.Join(out, part.file), true)
		if err != nil {
			return Local{}, err
		}
		*part.dst = d.String()
	}
	l.Packages = readPackages(filepath.Join(out, "packages.txt"))
	if err := s.saveLocal(ctx, func(m map[string]Local) { m[name] = l }); err != nil {
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
