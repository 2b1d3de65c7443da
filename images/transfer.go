package images

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/images/ociartifact"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/lock"
)

// pinsOf are a lock's image pins by artifact role.
func pinsOf(img lock.Image) map[ociartifact.Role]string {
	return map[ociartifact.Role]string{ociartifact.Disk: img.Digest, ociartifact.Kernel: img.Kernel, ociartifact.Initrd: img.Initrd}
}

// pack makes the artifact of a cached local image, staged in the cache's
// temporary directory (removed by the returned function).
func (s *Store) pack(ctx context.Context, img lock.Image) (v1.Image, func(), error) {
	if img.Kind != lock.ImageLocal {
		return nil, nil, fault.Inputf("image %s is a %s image: only local builds go into an image store (a download has its own URL)", img.Name, img.Kind)
	}
	var files []ociartifact.File
	for role, d := range pinsOf(img) {
		if d == "" {
			continue
		}
		pd, err := cache.ParseDigest(d)
		if err != nil {
			return nil, nil, fault.Inputf("image %s: %s: %v", img.Name, role, err)
		}
		p, ok := s.Cache.Has(pd)
		if !ok {
			return nil, nil, fault.Inputf("image %s %s is not in this cache (no %s %s); build it, pull it or import it first", img.Name, short(img.Digest), role, d)
		}
		files = append(files, ociartifact.File{Role: role, Path: p, Digest: d})
	}
	sortFiles(files)
	work, err := os.MkdirTemp(filepath.Join(s.Cache.Dir, "tmp"), "pack-")
	if err != nil {
		return nil, nil, fault.Infraf("pack: %w", err)
	}
	cleanup := func() { _ = os.RemoveAll(work) }
	fastSeed := true
	if l, ok := s.local(img); ok {
		fastSeed = l.FastSeed
	}
	meta := ociartifact.Meta{Name: img.Name, Format: img.Format, Recipe: img.Recipe, Snapshot: img.Snapshot, FastSeed: fastSeed, Packages: img.Packages}
	art, err := ociartifact.Pack(ctx, meta, files, work)
	if err != nil {
		cleanup()
		return nil, nil, err
	}
	return art, cleanup, nil
}

func sortFiles(files []ociartifact.File) {
	slices.SortFunc(files, func(a, b ociartifact.File) int {
		return slices.Index(ociartifact.Roles, a.Role) - slices.Index(ociartifact.Roles, b.Role)
	})
}

// Push writes a cached local image into the image store, tagged by its
// disk digest (and by extra tags), and returns the pushed reference.
func (s *Store) Push(ctx context.Context, store string, img lock.Image, extra ...string) (string, error) {
	repo, err := ociartifact.ParseRepository(store)
	if err != nil {
		return "", err
	}
	art, cleanup, err := s.pack(ctx, img)
	if err != nil {
		return "", err
	}
	defer cleanup()
	return ociartifact.Push(ctx, repo, art, ociartifact.Tag(img.Digest), extra...)
}

// PullLocked fetches the image a lock pins from the image store, by its
// disk digest, checking every blob against the lock before anything
// enters the cache; current makes it its name's current build. It
// returns the reference it pulled.
func (s *Store) PullLocked(ctx context.Context, store string, want lock.Image, current bool) (string, error) {
	repo, err := ociartifact.ParseRepository(store)
	if err != nil {
		return "", err
	}
	ref := repo.Tag(ociartifact.Tag(want.Digest))
	art, err := ociartifact.Pull(ctx, ref)
	if err != nil {
		return "", err
	}
	if _, err := s.adopt(ctx, art, ref.String(), pinsOf(want), "pulled from "+ref.String(), current); err != nil {
		return "", err
	}
	return ref.String(), nil
}

// PullRef fetches an image artifact by reference (REPO:TAG or
// REPO@DIGEST), checks every blob against the digests it records, and
// makes it its name's current build.
func (s *Store) PullRef(ctx context.Context, refText string) (Local, error) {
	ref, err := ociartifact.ParseReference(refText)
	if err != nil {
		return Local{}, err
	}
	art, err := ociartifact.Pull(ctx, ref)
	if err != nil {
		return Local{}, err
	}
	return s.adopt(ctx, art, ref.String(), nil, "pulled from "+ref.String(), true)
}

// Export writes cached local images as one OCI image layout tarball.
func (s *Store) Export(ctx context.Context, path string, imgs []lock.Image) error {
	var tagged []ociartifact.Tagged
	for _, img := range imgs {
		art, cleanup, err := s.pack(ctx, img)
		if err != nil {
			return err
		}
		defer cleanup()
		tagged = append(tagged, ociartifact.Tagged{Tag: ociartifact.Tag(img.Digest), Image: art})
	}
	return ociartifact.WriteLayout(ctx, path, tagged, filepath.Join(s.Cache.Dir, "tmp"))
}

// Import reads an OCI image layout tarball (from `envctl image export`),
// checks every blob, and makes each image its name's current build.
func (s *Store) Import(ctx context.Context, path string) ([]Local, error) {
	tagged, dir, err := ociartifact.ReadLayout(ctx, path, filepath.Join(s.Cache.Dir, "tmp"))
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	var out []Local
	for _, t := range tagged {
		l, err := s.adopt(ctx, t.Image, path, nil, "imported from "+path, true)
		if err != nil {
			return out, err
		}
		out = append(out, l)
	}
	return out, nil
}

// adopt unpacks an artifact into the cache: every file checked against
// the artifact's digests and against want (a lock's pins) when given,
// then recorded as a known build (and as its name's current one when
// current is set, or when the name has none).
func (s *Store) adopt(ctx context.Context, art v1.Image, where string, want map[ociartifact.Role]string, from string, current bool) (Local, error) {
	work, err := os.MkdirTemp(filepath.Join(s.Cache.Dir, "tmp"), "unpack-")
	if err != nil {
		return Local{}, fault.Infraf("unpack: %w", err)
	}
	defer os.RemoveAll(work)
	un, err := ociartifact.Unpack(ctx, art, work, where, want)
	if err != nil {
		return Local{}, err
	}
	m := un.Meta
	if _, ok := s.Catalog.Builds[m.Name]; !ok {
		return Local{}, fault.Inputf("%s holds image %q, which this envctl cannot use (it knows %s)", where, m.Name, strings.Join(s.buildNames(), ", "))
	}
	l := Local{Name: m.Name, Format: m.Format, Built: time.Now().UTC(), FastSeed: m.FastSeed, Recipe: m.Recipe, Snapshot: m.Snapshot, Packages: m.Packages, From: from}
	for role, dst := range map[ociartifact.Role]*string{ociartifact.Disk: &l.Disk, ociartifact.Kernel: &l.Kernel, ociartifact.Initrd: &l.Initrd} {
		p, ok := un.Paths[role]
		if !ok {
			continue
		}
		d, _, err := s.Cache.Import(ctx, p, true)
		if err != nil {
			return Local{}, err
		}
		if d.String() != m.Files[role] {
			return Local{}, &ociartifact.CorruptError{Where: where, Msg: fmt.Sprintf("%s entered the cache as %s, not %s", role, d, m.Files[role])}
		}
		*dst = d.String()
	}
	return s.remember(ctx, l, current)
}

func (s *Store) buildNames() []string { return slices.Sorted(maps.Keys(s.Catalog.Builds)) }
