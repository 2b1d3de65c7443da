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

	"github.com/envctl/envctl/images/archive"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/scripts"
)

// Build runs the image's build recipe (a script in scripts/) with its
// packages from src (the zero Source: Debian's own mirrors) and records
// the result in the local image registry as the name's current build.
// The script's output goes to log.
func (s *Store) Build(ctx context.Context, name string, src archive.Source, log io.Writer) (Local, error) {
	return s.build(ctx, name, src, log, true)
}

// build builds an image; current makes it its name's current build (a
// rebuild of a lock's older pin is only remembered by its digest).
func (s *Store) build(ctx context.Context, name string, src archive.Source, log io.Writer, current bool) (Local, error) {
	recipe, err := s.recipe(name)
	if err != nil {
		return Local{}, err
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
	out := filepath.Join(work, "out")
	runRecipe := s.RunRecipe
	if runRecipe == nil {
		runRecipe = RunScript
	}
	if err := runRecipe(ctx, recipe, src, work, out, log); err != nil {
		return Local{}, fault.Infraf("image build %s: %s failed: %w (its output is above)", name, recipe.Script, err)
	}
	if src.Kind == "" {
		src.Kind = archive.Live
	}
	l := Local{Name: name, Format: "raw", Built: time.Now().UTC(), FastSeed: true, Recipe: s.recipeHash(name), From: "built from " + src.String()}
	record, err := os.ReadFile(filepath.Join(out, "archive.txt"))
	if err == nil {
		l.Snapshot, err = archive.StateOf(record)
	}
	if err != nil {
		return Local{}, fault.Infraf("image build %s: the archive state it read: %w", name, err)
	}
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
	return s.remember(ctx, l, current)
}

// RecipeRunner runs an image recipe with its packages from src, leaving
// disk.raw, vmlinuz, initrd.img, packages.txt and archive.txt in out
// (scratch space in work).
type RecipeRunner func(ctx context.Context, recipe *catalog.ImageRecipe, src archive.Source, work, out string, log io.Writer) error

// RunScript runs the recipe's script from envctl's embedded scripts: what
// builds images for real (mmdebstrap).
func RunScript(ctx context.Context, recipe *catalog.ImageRecipe, src archive.Source, work, out string, log io.Writer) error {
	script, err := scripts.Extract(filepath.Join(work, "scripts"), recipe.Script)
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "bash", append([]string{script, out}, recipe.Args...)...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.Env = append(os.Environ(), "ENVCTL_APT_SOURCES="+strings.Join(src.Lines, "\n"))
	return cmd.Run()
}

// recipe is the build recipe of an image name.
func (s *Store) recipe(name string) (*catalog.ImageRecipe, error) {
	recipe, ok := s.Catalog.Builds[name]
	if !ok || recipe == nil {
		var names []string
		for n := range s.Catalog.Builds {
			names = append(names, n)
		}
		slices.Sort(names)
		return nil, fault.Inputf("image %q has no local build recipe; buildable: %s", name, strings.Join(names, ", "))
	}
	return recipe, nil
}

// Suite is the Debian suite an image's recipe builds (bookworm, trixie).
func (s *Store) Suite(name string) (string, error) {
	r, err := s.recipe(name)
	if err != nil {
		return "", err
	}
	if len(r.Args) == 0 {
		return "bookworm", nil
	}
	return r.Args[0], nil
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
