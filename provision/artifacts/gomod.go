package artifacts

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/base/task"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/pin"
)

// recipe builds a module's binaries inside a writable copy of the module.
type recipe struct {
	// version changes whenever the build below changes, invalidating caches.
	version string
	// needsCgo marks recipes that link C (gcc, make, libseccomp-dev).
	needsCgo bool
	build    func(ctx context.Context, b *builder) error
}

// The recipes link the module's origin commit (from the lock) the way
// each upstream Makefile links its git commit, so that the binaries say
// which commit they are: crio through its version package (which upstream
// fills from the git checkout's vcs.revision; envctl builds from the module
// zip, which has none, so it adds two variables to that package in its
// build copy), runc through main.gitCommit, crictl as semver build metadata
// of its version.
var recipes = map[string]recipe{
	// crictl: a plain static Go build. The module path inside go.mod moved
	// from github.com/kubernetes-sigs/cri-tools to sigs.k8s.io/cri-tools, and
	// v1.30 refuses `go install` because of replace directives; building in
	// a copy of the module works for every version.
	"crictl": {version: "2", build: func(ctx context.Context, b *builder) error {
		mod := b.modulePath()
		v := "v" + b.version
		if b.commit != "" {
			v += "+" + shortCommit(b.commit)
		}
		return b.goBuild(ctx, false, "", fmt.Sprintf("-X %s/pkg/version.Version=%s", mod, v), "crictl", "./cmd/crictl")
	}},
	// runc always needs cgo and libseccomp; built as static PIE.
	"runc": {version: "2", needsCgo: true, build: func(ctx context.Context, b *builder) error {
		ld := fmt.Sprintf("-X main.version=%s", b.version)
		if b.commit != "" {
			ld += " -X main.gitCommit=" + b.commit
		}
		return b.goBuild(ctx, true, "seccomp urfave_cli_no_docs netgo osusergo",
			ld+" -linkmode external -extldflags --static-pie", "runc", ".", "-buildmode=pie")
	}},
	// CRI-O: static with seccomp; pinns is C code built with make.
	"crio": {version: "2", needsCgo: true, build: func(ctx context.Context, b *builder) error {
		tags := "containers_image_openpgp containers_image_ostree_stub exclude_graphdriver_btrfs exclude_graphdriver_devicemapper btrfs_noversion seccomp apparmor selinux netgo osusergo static"
		ld := "-s -w -X github.com/cri-o/cri-o/internal/version.buildDate=1970-01-01T00:00:00Z -linkmode external -extldflags '-static -lm'"
		if b.commit != "" {
			linked, err := linkCommitIntoCRIO(b.src)
			if err != nil {
				return err
			}
			if linked {
				ld += " -X github.com/cri-o/cri-o/internal/version.envctlGitCommit=" + b.commit +
					" -X github.com/cri-o/cri-o/internal/version.envctlGitCommitDate=" + b.commitTime
			}
		}
		if err := b.goBuild(ctx, true, tags, ld, "crio", "./cmd/crio"); err != nil {
			return err
		}
		if err := b.run(ctx, b.src, nil, "make", "-C", "pinns"); err != nil {
			return fmt.Errorf("build pinns: %w", err)
		}
		return copyExec(filepath.Join(b.src, "bin", "pinns"), filepath.Join(b.out, "pinns"))
	}},
	// CRI-O's own test tree, for the upstream suite: test/ as one tar
	// (uploaded and checked as one file) and copyimg built from it, static
	// without cgo, as upstream's helpers import images with it.
	"crio-tests": {version: "1", build: func(ctx context.Context, b *builder) error {
		if err := b.goBuild(ctx, false, "containers_image_openpgp containers_image_ostree_stub exclude_graphdriver_btrfs exclude_graphdriver_devicemapper btrfs_noversion",
			"-s -w", "copyimg", "./test/copyimg"); err != nil {
			return fmt.Errorf("build copyimg: %w", err)
		}
		return tarTree(filepath.Join(b.src, "test"), filepath.Join(b.out, CRIOTestTar))
	}},
}

// CRIOTestTar is the file the crio-tests recipe puts CRI-O's test/ tree in.
const CRIOTestTar = "crio-test.tar"

// tarTree writes dir as a tar whose entries are relative to dir.
func tarTree(dir, dst string) error {
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(f)
	err = tw.AddFS(os.DirFS(dir))
	if cerr := tw.Close(); err == nil {
		err = cerr
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("pack %s: %w", dir, err)
	}
	return nil
}

// linkCommitIntoCRIO lets CRI-O's version package take its git commit and
// date from linker flags when the build info has none. It reports false
// (and changes nothing) for a version package of another shape.
func linkCommitIntoCRIO(src string) (bool, error) {
	path := filepath.Join(src, "internal", "version", "version.go")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // a tree without the version package
	}
	if err != nil {
		return false, err
	}
	text := string(b)
	const commit, date = "\tgitCommit := unknown\n", "\tgitCommitDate := unknown\n"
	if !strings.Contains(text, commit) || !strings.Contains(text, date) {
		return false, nil
	}
	text = strings.Replace(text, commit, "\tgitCommit := envctlGitCommit\n", 1)
	text = strings.Replace(text, date, "\tgitCommitDate := envctlGitCommitDate\n", 1)
	text += "\n// Set by envctl's linker flags: the module's origin commit and its time.\nvar envctlGitCommit, envctlGitCommitDate = \"unknown\", \"unknown\"\n"
	if err := os.Chmod(path, 0o644); err != nil {
		return false, err
	}
	return true, os.WriteFile(path, []byte(text), 0o644)
}

func shortCommit(c string) string {
	if len(c) > 12 {
		return c[:12]
	}
	return c
}

type builder struct {
	module, version, src, out string
	// commit and commitTime are the module's origin, when the lock has it.
	commit, commitTime string
	log                io.Writer
}

var moduleRE = regexp.MustCompile(`(?m)^module\s+(\S+)`)

func (b *builder) modulePath() string {
	data, _ := os.ReadFile(filepath.Join(b.src, "go.mod"))
	if m := moduleRE.FindSubmatch(data); m != nil {
		return string(m[1])
	}
	return b.module
}

func (b *builder) goBuild(ctx context.Context, cgo bool, tags, ldflags, name, pkg string, extra ...string) error {
	args := []string{"build", "-mod=mod", "-trimpath"}
	args = append(args, extra...)
	if tags != "" {
		args = append(args, "-tags", tags)
	}
	args = append(args, "-ldflags", ldflags, "-o", filepath.Join(b.out, name), pkg)
	env := []string{"CGO_ENABLED=0", "GOFLAGS=-mod=mod", "GOWORK=off"}
	if cgo {
		env[0] = "CGO_ENABLED=1"
	}
	return b.run(ctx, b.src, env, "go", args...)
}

func (b *builder) run(ctx context.Context, dir string, env []string, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var tail bytes.Buffer
	w := io.Writer(&tail)
	if b.log != nil {
		w = io.MultiWriter(&tail, b.log)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w\n%s", name, strings.Join(args, " "), err, lastLines(tail.String(), 15))
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// BuildKey identifies a gomod build: module, version, sum, recipe and Go toolchain.
func BuildKey(a lock.Artifact) string {
	r := recipes[a.Recipe]
	commit := ""
	if a.Origin != nil {
		commit = a.Origin.Commit + " " + a.Origin.Time.UTC().Format(time.RFC3339)
	}
	h := sha256.Sum256([]byte(strings.Join([]string{a.Module, a.Version, a.ModuleSum, a.Recipe, r.version, runtime.GOARCH, goVersion(), commit}, "\n")))
	return a.Recipe + "-" + a.Version + "-" + hex.EncodeToString(h[:])[:16]
}

// Toolchain is the Go toolchain builds are made with ("go1.26.0").
func Toolchain() string { return goVersion() }

var goVersion = sync.OnceValue(func() string {
	out, err := exec.Command("go", "env", "GOVERSION").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
})

func (f *Fetcher) gomod(ctx context.Context, a lock.Artifact) (Files, error) {
	r, ok := recipes[a.Recipe]
	if !ok {
		return Files{}, fault.Inputf("lock: %s has unknown build recipe %q; run `envctl lock`", a.Component, a.Recipe)
	}
	if _, err := exec.LookPath("go"); err != nil {
		return Files{}, fault.Infraf("%s %s comes from source gomod, which needs the go command on PATH; install Go or use source release", a.Component, a.Version)
	}
	key := BuildKey(a)
	out := filepath.Join(f.Cache.Dir, "builds", key)
	if files, ok := f.built(out); ok {
		return files, nil
	}
	unlock, err := f.Cache.Lock(ctx, "build-"+key)
	if err != nil {
		return Files{}, err
	}
	defer unlock()
	if files, ok := f.built(out); ok {
		return files, nil
	}
	f.step("building %s v%s from the Go module proxy (%s, recipe %s; cached afterwards)", a.Component, a.Version, a.Module, a.Recipe)
	return f.buildModule(ctx, a, r, out)
}

// buildModule downloads, checks and builds one module version into out,
// as a task whose output the CLI shows on failure.
func (f *Fetcher) buildModule(ctx context.Context, a lock.Artifact, r recipe, out string) (_ Files, err error) {
	w, done := task.Begin(f.Task, "build "+a.Component+" "+a.Version, f.Output)
	defer func() { done(err) }()
	start := time.Now()
	work, err := os.MkdirTemp(filepath.Join(f.Cache.Dir, "tmp"), "build-"+a.Recipe+"-")
	if err != nil {
		return Files{}, fault.Infraf("build %s: %w", a.Component, err)
	}
	defer os.RemoveAll(work)
	info, err := pin.DownloadModule(ctx, a.Module, "v"+a.Version)
	if err != nil {
		return Files{}, fault.Infraf("build %s %s: %w", a.Component, a.Version, err)
	}
	if info.Sum != a.ModuleSum {
		return Files{}, fault.Infraf("build %s %s: module %s@v%s has sum %s, the lock pins %s; the module proxy served different code: investigate, then run `envctl lock`", a.Component, a.Version, a.Module, a.Version, info.Sum, a.ModuleSum)
	}
	src := filepath.Join(work, "src")
	if err := os.CopyFS(src, os.DirFS(info.Dir)); err != nil {
		return Files{}, fault.Infraf("build %s: copy module: %w", a.Component, err)
	}
	tmpOut := filepath.Join(work, "out")
	if err := os.MkdirAll(tmpOut, 0o755); err != nil {
		return Files{}, fault.Infraf("build %s: %w", a.Component, err)
	}
	b := &builder{module: a.Module, version: a.Version, src: src, out: tmpOut, log: w}
	if a.Origin != nil {
		b.commit, b.commitTime = a.Origin.Commit, a.Origin.Time.UTC().Format(time.RFC3339)
	}
	if err := r.build(ctx, b); err != nil {
		hint := ""
		if r.needsCgo {
			hint = " (this recipe needs gcc, make and libseccomp-dev: `make host` installs them)"
		}
		return Files{}, fault.Infraf("build %s %s%s: %w", a.Component, a.Version, hint, err)
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return Files{}, fault.Infraf("build %s: %w", a.Component, err)
	}
	if _, err := cache.SealTree(tmpOut); err != nil {
		return Files{}, err
	}
	_ = os.RemoveAll(out)
	if err := os.Rename(tmpOut, out); err != nil {
		return Files{}, fault.Infraf("build %s: %w", a.Component, err)
	}
	f.log().Info("built", "component", a.Component, "version", a.Version, "seconds", time.Since(start).Seconds())
	files, ok := f.built(out)
	if !ok {
		return Files{}, fault.Infraf("build %s %s: the output in %s did not pass its own check", a.Component, a.Version, out)
	}
	return files, nil
}

// built returns a sealed build output's binaries with their digests, or
// ok=false when it is missing or was corrupt (and is now removed).
func (f *Fetcher) built(dir string) (Files, bool) {
	m, ok := f.sealed(dir)
	if !ok || len(m) == 0 {
		return Files{}, false
	}
	files := Files{Binaries: map[string]string{}}.withDigests(dir, m)
	for rel, tf := range m {
		if tf.Link == "" {
			files.Binaries[rel] = filepath.Join(dir, filepath.FromSlash(rel))
		}
	}
	return files, true
}

func copyExec(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, b, 0o755)
}
