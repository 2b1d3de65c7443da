package pin

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/lock"
)

// Resolver supplies what locking needs from the outside world.
type Resolver struct {
	Catalog *catalog.Catalog
	Images  *images.Store
	HTTP    *http.Client
	Arch    string
	// Mirror replaces upstream hosts: URL https://HOST/PATH becomes MIRROR/HOST/PATH.
	Mirror string
	// ModuleSum returns the go.sum hash (h1:…) of module@version.
	ModuleSum func(ctx context.Context, module, version string) (string, error)
	// ModuleInfo returns module@version's .info (time and origin).
	ModuleInfo func(ctx context.Context, module, version string) (Info, error)
	// KnownDigests pins a release artifact from the digest the catalog
	// records for it, when it has one, without fetching the checksum file.
	KnownDigests bool
	// Image resolves a profile's image name to the image a new lock pins;
	// nil means Images.Resolve (the current local build or the catalog's
	// download).
	Image func(ctx context.Context, name string) (lock.Image, error)
	// AllowMovedTags accepts a gomod version whose module commit is not
	// upstream's release commit (the tag moved after the proxy cached it);
	// the lock then records both commits.
	AllowMovedTags bool
}

// New makes a resolver with the embedded catalog, the go command for
// module sums and $ENVCTL_MIRROR as the mirror.
func New(imgs *images.Store, arch string) *Resolver {
	return &Resolver{Catalog: catalog.Default(), Images: imgs, HTTP: &http.Client{Timeout: 60 * time.Second},
		Arch: arch, Mirror: os.Getenv("ENVCTL_MIRROR"), ModuleSum: GoModuleSum, KnownDigests: true}
}

// Lock resolves every cell of a profile to exact artifacts.
func (r *Resolver) Lock(ctx context.Context, p *profiles.Profile) (*lock.File, error) {
	cells, err := profiles.Resolve(r.Catalog, p)
	if err != nil {
		return nil, err
	}
	resolveImage := r.Image
	if resolveImage == nil {
		resolveImage = func(_ context.Context, name string) (lock.Image, error) { return r.Images.Resolve(name) }
	}
	img, err := resolveImage(ctx, p.Image)
	if err != nil {
		return nil, fmt.Errorf("%s: image: %w", p.Path, err)
	}
	f := &lock.File{LockVersion: lock.FormatVersion, Profile: p.Name, ProfileHash: p.Hash(), Inputs: p.Inputs(),
		Generated: time.Now().UTC().Truncate(time.Second), Arch: r.Arch, Image: img}
	done := map[string]bool{}
	pkgs := r.Images.Packages(img)
	for _, cell := range cells {
		lc := lock.Cell{Name: cell.Name, Components: map[profiles.Role]string{}}
		for _, comp := range cell.Components {
			a := lock.Artifact{Component: comp.Name, Version: comp.Version, Source: comp.Source}
			if comp.Source == profiles.SourceBundle {
				crio, _ := cell.Component(profiles.RoleCRIO)
				a.Bundle = lock.Artifact{Component: crio.Name, Version: crio.Version, Source: crio.Source}.Key()
			}
			lc.Components[comp.Role] = a.Key()
			if done[a.Key()] {
				continue
			}
			if err := r.pin(ctx, p, &a, comp.Commit, pkgs); err != nil {
				return nil, err
			}
			done[a.Key()] = true
			f.Artifacts = append(f.Artifacts, a)
		}
		f.Cells = append(f.Cells, lc)
	}
	slices.SortFunc(f.Artifacts, func(a, b lock.Artifact) int { return strings.Compare(a.Key(), b.Key()) })
	tools, err := r.tools(ctx, p, f.Artifacts)
	if err != nil {
		return nil, err
	}
	f.Tools = tools
	return f, nil
}

// tools pins what upstream test suites need: the bats package from the
// catalog, and CRI-O's test tree for every locked CRI-O version. For a
// gomod CRI-O that is the very module the binary is built from; for
// another source, the module of the same version, by its go.sum hash.
// A profile that does not run an upstream suite still gets the tools
// when they resolve, so `--test upstream` works on its lock; when they do
// not (no module proxy), only such a profile fails.
func (r *Resolver) tools(ctx context.Context, p *profiles.Profile, arts []lock.Artifact) ([]lock.Artifact, error) {
	_, needed := p.Test.UpstreamFile()
	var out []lock.Artifact
	if t, err := r.Catalog.Tool(lock.ToolBats); err == nil {
		out = append(out, lock.Artifact{Component: lock.ToolBats, Version: t.Version, Source: profiles.SourceRelease, URL: t.URL, SHA256: t.SHA256})
	} else if needed {
		return nil, fault.Inputf("%s: test %s: %v", p.Path, p.Test, err)
	}
	for _, a := range arts {
		if a.Component != string(profiles.RoleCRIO) {
			continue
		}
		t := lock.Artifact{Component: lock.ToolCRIOTests, Version: a.Version, Source: profiles.SourceGoMod, Module: lock.CRIOModule, Recipe: "crio-tests"}
		if a.Source.Kind() == profiles.KindGoMod {
			t.Module, t.ModuleSum, t.Origin = a.Module, a.ModuleSum, a.Origin
		} else {
			sum, err := r.ModuleSum(ctx, t.Module, "v"+a.Version)
			if err != nil {
				if needed {
					return nil, fault.Infraf("%s: test %s needs CRI-O's test tree %s@v%s: %w", p.Path, p.Test, t.Module, a.Version, err)
				}
				slog.Warn("lock: no CRI-O test tree; --test upstream will not work with this lock", "module", t.Module, "version", a.Version, "err", err)
				continue
			}
			t.ModuleSum = sum
		}
		out = append(out, t)
	}
	return out, nil
}

func (r *Resolver) pin(ctx context.Context, p *profiles.Profile, a *lock.Artifact, commit string, pkgs map[string]string) error {
	comp, err := r.Catalog.Get(a.Component)
	if err != nil {
		return fault.AsInput(err)
	}
	switch a.Source.Kind() {
	case profiles.KindRelease, profiles.KindMirror:
		rel := comp.Release
		a.URL = catalog.Expand(rel.URL, a.Version, r.Arch)
		sumURL := catalog.Expand(rel.ChecksumURL, a.Version, r.Arch)
		if a.Source.Kind() == profiles.KindMirror {
			if r.Mirror == "" {
				return fault.Inputf("%s: %s uses source mirror, but ENVCTL_MIRROR is not set; set it to a URL or file:///dir laid out like upstream", p.Path, a.Component)
			}
			a.URL, sumURL = MirrorURL(r.Mirror, a.URL), MirrorURL(r.Mirror, sumURL)
		}
		// A digest upstream published (recorded in the catalog) needs no
		// network; the download is still checked against it.
		if facts, ok := comp.Upstream(a.Version); ok && r.KnownDigests && facts.SHA256[r.Arch] != "" {
			a.SHA256 = facts.SHA256[r.Arch]
			return nil
		}
		body, err := cache.Get(ctx, r.HTTP, sumURL)
		if err != nil {
			return fmt.Errorf("lock %s %s: checksum: %w", a.Component, a.Version, err)
		}
		name := filepath.Base(a.URL)
		if rel.ChecksumName != "" {
			name = catalog.Expand(rel.ChecksumName, a.Version, r.Arch)
		}
		sum, err := ParseChecksum(body, rel.ChecksumFormat, name)
		if err != nil {
			return fault.Infraf("lock %s %s: checksum file %s: %w", a.Component, a.Version, sumURL, err)
		}
		a.SHA256 = sum
	case profiles.KindGoMod:
		a.Module, a.Recipe = comp.GoMod.Module, comp.GoMod.Recipe
		sum, err := r.ModuleSum(ctx, a.Module, "v"+a.Version)
		if err != nil {
			return fault.Infraf("lock %s %s: Go module %s@v%s: %w", a.Component, a.Version, a.Module, a.Version, err)
		}
		a.ModuleSum = sum
		return r.provenance(ctx, p, comp, a, commit)
	case profiles.KindFile:
		d, err := cache.FileDigest(a.Source.Path(), digest.SHA256)
		if err != nil {
			return fault.Inputf("%s: %s source %s: %v; point it at an existing file", p.Path, a.Component, a.Source, err)
		}
		a.SHA256 = d.Encoded()
	case profiles.KindPackage:
		a.Package = comp.Package
		if pkgs != nil {
			have, ok := pkgs[a.Package]
			if !ok {
				return fault.Inputf("%s: %s: the image %s has no package %s; use another source", p.Path, a.Component, p.Image, a.Package)
			}
			if !catalog.SameVersion(UpstreamVersion(have), a.Version) {
				return fault.Inputf("%s: components.%s: the image %s ships %s %s, not %s; pin version %q or use another source",
					p.Path, a.Component, p.Image, a.Package, have, a.Version, UpstreamVersion(have))
			}
		}
	case profiles.KindBundle:
		// Pinned through the CRI-O bundle's own digest.
	}
	return nil
}

// MirrorURL maps an upstream URL onto a mirror base.
func MirrorURL(mirror, upstream string) string {
	rest := strings.TrimPrefix(strings.TrimPrefix(upstream, "https://"), "http://")
	return strings.TrimSuffix(mirror, "/") + "/" + rest
}

// UpstreamVersion strips a Debian revision and epoch: "1:2.1.6+ds1-1" → "2.1.6".
func UpstreamVersion(deb string) string {
	if _, v, ok := strings.Cut(deb, ":"); ok {
		deb = v
	}
	if i := strings.LastIndex(deb, "-"); i > 0 {
		deb = deb[:i]
	}
	if i := strings.IndexAny(deb, "+~"); i > 0 {
		deb = deb[:i]
	}
	return deb
}

var hexRE = regexp.MustCompile(`^[0-9a-fA-F]{64}$`)

// ParseChecksum reads a sha256 from a checksum file. Format "hex" is a file
// holding only the digest (crictl's .sha256); "sha256sum" is the
// `sha256sum` output format, one "DIGEST  NAME" per line (runc.sha256sum,
// crun CHECKSUMS, CRI-O's .sha256sum), where name picks the line.
func ParseChecksum(body []byte, format, name string) (string, error) {
	switch format {
	case "hex":
		f := strings.Fields(string(body))
		if len(f) == 0 || !hexRE.MatchString(f[0]) {
			return "", fmt.Errorf("expected a bare sha256 hex digest, got %q", truncate(string(body), 80))
		}
		return strings.ToLower(f[0]), nil
	case "sha256sum":
		sc := bufio.NewScanner(bytes.NewReader(body))
		var names []string
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) < 2 || !hexRE.MatchString(f[0]) {
				continue
			}
			file := strings.TrimPrefix(filepath.Base(strings.TrimPrefix(f[1], "*")), "./")
			names = append(names, file)
			if file == name {
				return strings.ToLower(f[0]), nil
			}
		}
		return "", fmt.Errorf("no line for %s (it lists: %s)", name, truncate(strings.Join(names, ", "), 200))
	}
	return "", fmt.Errorf("unknown checksum format %q", format)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

// GoModuleSum asks the go command for module@version's go.sum hash. It
// downloads the module into the module cache through GOPROXY, from a
// private empty directory so no surrounding go.mod or go.work interferes.
func GoModuleSum(ctx context.Context, module, version string) (string, error) {
	info, err := DownloadModule(ctx, module, version)
	if err != nil {
		return "", err
	}
	return info.Sum, nil
}

// Downloaded is what `go mod download -json` reports.
type Downloaded struct {
	Path, Version, Dir, Sum, Error string
}

// DownloadModule runs `go mod download -json module@version` in a private
// temporary directory with GOWORK=off and checks that the answer is the
// module and version asked for.
func DownloadModule(ctx context.Context, module, version string) (Downloaded, error) {
	tmp, err := os.MkdirTemp("", "envctl-gomod-")
	if err != nil {
		return Downloaded{}, err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", module+"@"+version)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off", "GO111MODULE=on")
	out, runErr := cmd.Output()
	var info Downloaded
	_ = json.Unmarshal(out, &info)
	if info.Error != "" {
		return info, fmt.Errorf("the Go module proxy refused it: %s", info.Error)
	}
	if runErr != nil {
		var ee *exec.ExitError
		if errors.As(runErr, &ee) {
			return info, fmt.Errorf("go mod download: %s", strings.TrimSpace(string(ee.Stderr)))
		}
		return info, fmt.Errorf("go mod download: %w (is the go command installed?)", runErr)
	}
	if info.Path != module || info.Version != version {
		return info, fmt.Errorf("go mod download %s@%s answered for %s@%s", module, version, info.Path, info.Version)
	}
	if info.Sum == "" {
		return info, fmt.Errorf("go mod download gave no sum")
	}
	return info, nil
}

// provenance records where a gomod artifact's code comes from. The commit
// is read from the first source that has one, in this order (lock
// .CommitSource): the module proxy's record of the version (its .info
// Origin, asked over HTTP, never the local module cache), then the commit
// of upstream's release tag in envctl's catalog. The profile's `commit:`
// only selects: it must agree with the commit the sources give. Two
// sources that disagree are refused: a pin the commit does not start with,
// or a module commit that is not the release tag's (a moved tag), unless
// the profile pins that commit or AllowMovedTags is set; the lock then
// records both commits. Whatever this machine built or cached before, the
// same inputs give the same lock.
func (r *Resolver) provenance(ctx context.Context, p *profiles.Profile, comp *catalog.Component, a *lock.Artifact, pinned string) error {
	moduleInfo := r.ModuleInfo
	if moduleInfo == nil {
		moduleInfo = ModuleInfo
	}
	info, err := moduleInfo(ctx, a.Module, "v"+a.Version)
	if err != nil {
		return fault.Infraf("lock %s %s: Go module %s@v%s: %w", a.Component, a.Version, a.Module, a.Version, err)
	}
	rel, released := comp.Upstream(a.Version)
	switch {
	case info.Origin != nil && info.Origin.Hash != "":
		a.Origin = &lock.Origin{VCS: info.Origin.VCS, URL: info.Origin.URL, Ref: info.Origin.Ref, Commit: info.Origin.Hash, Time: info.Time.UTC(),
			Source: lock.CommitFromModuleProxy}
	case released && rel.Commit != "":
		a.Origin = &lock.Origin{VCS: "git", URL: comp.Repository(), Ref: "refs/tags/v" + a.Version, Commit: rel.Commit, Time: rel.Time.UTC(),
			Source: lock.CommitFromCatalog}
	case pinned != "":
		return fault.Inputf("%s: components.%s.commit: neither the module proxy nor envctl's catalog records a commit for %s@v%s, so commit %s cannot be checked; remove the pin or use a proxy that records the origin",
			p.Path, a.Component, a.Module, a.Version, pinned)
	default:
		return nil
	}
	if pinned != "" && !strings.HasPrefix(a.Origin.Commit, pinned) {
		if a.Origin.Source == lock.CommitFromCatalog {
			return fault.Inputf("%s: components.%s.commit: the module proxy records no commit for %s@v%s, and upstream's release v%s is commit %s (envctl's catalog), not the pinned %s; remove the pin or use a proxy that records the origin",
				p.Path, a.Component, a.Module, a.Version, a.Version, a.Origin.Commit, pinned)
		}
		return fault.Inputf("%s: components.%s.commit: the module proxy serves %s@v%s from commit %s (%s), not the pinned %s",
			p.Path, a.Component, a.Module, a.Version, a.Origin.Commit, a.Origin.Time.Format("2006-01-02"), pinned)
	}
	if a.Origin.Source == lock.CommitFromCatalog || comp.Status(a.Version, a.Origin.Commit) != catalog.StatusMovedTag {
		return nil
	}
	a.Origin.Release = rel.Commit
	if pinned != "" || r.AllowMovedTags {
		return nil
	}
	return fault.Inputf("%s: %s %s from gomod is not the release: the module proxy's v%s is commit %s (%s), upstream's release v%s is commit %s (%s); the tag moved after the proxy cached it. Pin `commit: %s` on the component to accept this snapshot, or run `envctl lock --allow-moved-tags`",
		p.Path, a.Component, a.Version, a.Version, a.Origin.Commit, a.Origin.Time.Format("2006-01-02"), a.Version, rel.Commit, rel.Time.Format("2006-01-02"), a.Origin.Commit[:8])
}
