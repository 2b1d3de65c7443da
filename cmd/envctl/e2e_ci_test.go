//go:build e2e

package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// The workflows of docs/ci.md, executed as a hosted runner would: a
// non-root user with passwordless sudo under Ubuntu's sudoers defaults
// (env_reset, secure_path), a fresh home, the `run:` steps in order with
// `${{ … }}` substituted from a fixture, actions/cache simulated by
// copying the saved path from one job's home to the next, and the image
// store pointed at a local registry. What matters is that the documented
// commands are the ones that run.

type ciWorkflow struct {
	Jobs map[string]ciJob `yaml:"jobs"`
}

type ciJob struct {
	Steps []ciStep `yaml:"steps"`
}

type ciStep struct {
	ID   string            `yaml:"id"`
	Uses string            `yaml:"uses"`
	With map[string]string `yaml:"with"`
	Run  string            `yaml:"run"`
	Env  map[string]string `yaml:"env"`
	If   string            `yaml:"if"`
}

// ciBlocks are docs/ci.md's workflows and step lists, in order. A block
// of steps becomes a one-job workflow (job "snippet").
func ciBlocks(t *testing.T) []ciWorkflow {
	t.Helper()
	doc, err := os.ReadFile("../../docs/ci.md")
	if err != nil {
		t.Fatal(err)
	}
	var out []ciWorkflow
	for _, m := range regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllStringSubmatch(string(doc), -1) {
		body := m[1]
		switch {
		case strings.Contains(body, "\njobs:"):
		case strings.HasPrefix(body, "      - "):
			body = "jobs:\n  snippet:\n    steps:\n" + body
		default:
			continue
		}
		var w ciWorkflow
		if err := yaml.Unmarshal([]byte(body), &w); err != nil {
			t.Fatalf("docs/ci.md: a workflow block does not parse: %v\n%s", err, body)
		}
		out = append(out, w)
	}
	return out
}

// hostedRunner is one job's machine: a new user (a fresh home), sudo as
// on Ubuntu's runners, and the caches actions/cache saved before.
type hostedRunner struct {
	t       *testing.T
	u       *unprivileged
	caches  map[string]string // key → saved copy
	fixture map[string]string // `${{ expression }}` → value
	env     map[string]string // the job's environment, beyond the runner's
	// repo is laid over the checkout: the files as the repository being
	// simulated has them committed (a lock re-pinned to this day's image).
	repo map[string][]byte
	log  strings.Builder
}

// ubuntuSudoers is Ubuntu's default sudoers policy, for one user with
// passwordless sudo as on GitHub's runners.
const ubuntuSudoers = `Defaults:%[1]s env_reset
Defaults:%[1]s mail_badpass
Defaults:%[1]s secure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/snap/bin"
%[1]s ALL=(ALL) NOPASSWD:ALL
`

func newHostedRunner(t *testing.T, caches map[string]string, fixture map[string]string) *hostedRunner {
	t.Helper()
	if _, err := exec.LookPath("sudo"); err != nil {
		t.Fatal("sudo is not installed (`make host` installs it)")
	}
	u := newUser(t)
	sudoers := filepath.Join("/etc/sudoers.d", strings.ReplaceAll(u.name, ".", "-"))
	if err := os.WriteFile(sudoers, fmt.Appendf(nil, ubuntuSudoers, u.name), 0o440); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.Remove(sudoers) })
	return &hostedRunner{t: t, u: u, caches: caches, fixture: fixture, env: map[string]string{}}
}

var ciExpr = regexp.MustCompile(`\$\{\{\s*(.*?)\s*\}\}`)

// subst replaces every `${{ … }}` from the fixture; an expression it has
// no value for stops the test (the workflow changed: extend the fixture).
func (r *hostedRunner) subst(s string) string {
	return ciExpr.ReplaceAllStringFunc(s, func(m string) string {
		e := ciExpr.FindStringSubmatch(m)[1]
		v, ok := r.fixture[e]
		if !ok {
			r.t.Fatalf("docs/ci.md uses ${{ %s }}, which the runner simulation has no value for", e)
		}
		return v
	})
}

func (r *hostedRunner) workspace() string { return filepath.Join(r.u.home, "work", "envctl") }

func (r *hostedRunner) expand(p string) string {
	if p == "~" || strings.HasPrefix(p, "~/") {
		return filepath.Join(r.u.home, strings.TrimPrefix(p, "~"))
	}
	if !filepath.IsAbs(p) {
		return filepath.Join(r.workspace(), p)
	}
	return p
}

// job runs a job's steps and returns its step outputs ("id.name") and
// whether it succeeded. Caches are saved after a successful job, as
// actions/cache's post step does.
func (r *hostedRunner) job(steps []ciStep) (map[string]string, bool) {
	t := r.t
	outputs := map[string]string{}
	ok := true
	var saves []func()
	for i, s := range steps {
		if !ok && s.If != "always()" {
			continue
		}
		switch {
		case strings.HasPrefix(s.Uses, "actions/checkout@"):
			ws := r.workspace()
			if out, err := exec.Command("git", "clone", "-q", "--no-hardlinks", "../..", ws).CombinedOutput(); err != nil {
				t.Fatalf("checkout: %v\n%s", err, out)
			}
			for rel, b := range r.repo {
				if err := os.WriteFile(filepath.Join(ws, rel), b, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			r.u.own(t, filepath.Join(r.u.home, "work"))
		case strings.HasPrefix(s.Uses, "actions/setup-go@"):
			goBin, _ := exec.LookPath("go")
			r.env["PATH"] = filepath.Join(r.u.home, "go", "bin") + ":" + filepath.Dir(goBin) + ":" + r.env["PATH"]
			// setup-go caches Go's module and build caches by default,
			// keyed by the toolchain and go.sum.
			sum, _ := os.ReadFile(filepath.Join(r.workspace(), "go.sum"))
			h := sha256.Sum256(sum)
			key := "setup-go-Linux-x64-go-" + s.With["go-version"] + "-" + hex.EncodeToString(h[:8])
			saves = append(saves, r.cache(key, "", r.expand("~/go/pkg/mod"), r.expand("~/.cache/go-build")))
		case strings.HasPrefix(s.Uses, "actions/cache@"):
			var paths []string
			for _, p := range strings.Split(strings.TrimSpace(s.With["path"]), "\n") {
				paths = append(paths, r.expand(strings.TrimSpace(p)))
			}
			saves = append(saves, r.cache(r.subst(s.With["key"]), r.subst(s.With["restore-keys"]), paths...))
		case strings.HasPrefix(s.Uses, "actions/upload-artifact@"):
			// As GitHub does: a path with no file is a warning, not a failure.
			if _, err := os.Stat(r.expand(s.With["path"])); err != nil {
				fmt.Fprintf(&r.log, "Warning: No files were found with the provided path: %s\n", s.With["path"])
			} else {
				fmt.Fprintf(&r.log, "Artifact %s uploaded: %s\n", r.subst(s.With["name"]), s.With["path"])
			}
		case s.Uses != "":
			fmt.Fprintf(&r.log, "step %d: %s is not simulated\n", i, s.Uses)
		case s.Run != "":
			out, err := r.run(s)
			fmt.Fprintf(&r.log, "$ %s\n%s", strings.TrimSpace(r.subst(s.Run)), out)
			if err != nil {
				fmt.Fprintf(&r.log, "step %d failed: %v\n", i, err)
				ok = false
			}
			if s.ID != "" {
				for k, v := range r.stepOutputs() {
					outputs[s.ID+"."+k] = v
				}
			}
		}
	}
	if ok {
		for _, f := range saves {
			f()
		}
	}
	return outputs, ok
}

// cache is actions/cache: it restores the paths saved under key (or
// under a key that starts with restoreKeys), and returns the post step
// that saves them when the key was not there.
func (r *hostedRunner) cache(key, restoreKeys string, paths ...string) func() {
	t := r.t
	restored, hit := r.caches[key]
	matched := key
	if !hit && restoreKeys != "" {
		for k, v := range r.caches {
			if strings.HasPrefix(k, restoreKeys) {
				restored, matched = v, k
			}
		}
	}
	if restored != "" {
		for i, p := range paths {
			saved := filepath.Join(restored, strconv.Itoa(i))
			if _, err := os.Lstat(saved); err != nil {
				continue
			}
			_ = os.MkdirAll(filepath.Dir(p), 0o755)
			if out, err := exec.Command("cp", "-a", "-T", saved, p).CombinedOutput(); err != nil {
				t.Fatalf("cache restore %s: %v\n%s", key, err, out)
			}
		}
		r.u.own(t, r.u.home)
		fmt.Fprintf(&r.log, "Cache restored from key: %s\n", matched)
	} else {
		fmt.Fprintf(&r.log, "Cache not found for input keys: %s\n", key)
	}
	return func() {
		if _, done := r.caches[key]; done {
			return
		}
		dir := suiteTemp(t, "envctl-e2e-actions-cache-")
		for i, p := range paths {
			if _, err := os.Lstat(p); err != nil {
				continue
			}
			if out, err := exec.Command("cp", "-a", "-T", p, filepath.Join(dir, strconv.Itoa(i))).CombinedOutput(); err != nil {
				t.Fatalf("cache save %s: %v\n%s", key, err, out)
			}
		}
		r.caches[key] = dir
	}
}

// run executes a run step as GitHub does (`bash --noprofile --norc -eo
// pipefail`), as the runner user, in the workspace.
func (r *hostedRunner) run(s ciStep) (string, error) {
	_ = os.WriteFile(filepath.Join(r.u.home, "github_output"), nil, 0o644)
	r.u.own(r.t, filepath.Join(r.u.home, "github_output"))
	cmd := exec.Command("bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", r.subst(s.Run))
	cmd.Dir = r.workspace()
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: r.u.uid, Gid: r.u.gid, Groups: []uint32{}}}
	env := map[string]string{"HOME": r.u.home, "USER": r.u.name, "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"GITHUB_OUTPUT": filepath.Join(r.u.home, "github_output"), "GITHUB_STEP_SUMMARY": filepath.Join(r.u.home, "step_summary.md"),
		"GITHUB_WORKSPACE": r.workspace(), "RUNNER_OS": "Linux", "CI": "true"}
	for _, k := range []string{"GOPROXY", "GOFLAGS", "GOSUMDB", "GONOSUMDB", "GOTOOLCHAIN"} {
		if v, ok := os.LookupEnv(k); ok {
			env[k] = v
		}
	}
	for k, v := range r.env {
		env[k] = v
	}
	if r.env["PATH"] != "" {
		env["PATH"] = strings.TrimSuffix(r.env["PATH"], ":") + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	for k, v := range s.Env {
		env[k] = r.subst(v)
	}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// stepOutputs reads $GITHUB_OUTPUT: name=value lines and name<<DELIM blocks.
func (r *hostedRunner) stepOutputs() map[string]string {
	b, _ := os.ReadFile(filepath.Join(r.u.home, "github_output"))
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if name, delim, ok := strings.Cut(line, "<<"); ok {
			var val []string
			for sc.Scan() && sc.Text() != delim {
				val = append(val, sc.Text())
			}
			out[name] = strings.Join(val, "\n")
		} else if name, val, ok := strings.Cut(line, "="); ok {
			out[name] = val
		}
	}
	return out
}

func hashFile(t *testing.T, p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestE2ECIRecipe runs docs/ci.md's jobs as hosted runners, one after
// another over one simulated actions/cache (setup-go's Go caches
// included), as a workflow's runs would meet them:
//   - the job that emits the matrix: its output is crictl-matrix's cells;
//   - a cell job whose lock changed since the last run (its key misses;
//     restore-keys restores the cache an earlier lock saved, which has
//     CRI-O's and crictl's builds but not this lock's runc): the image
//     comes from the store, a local registry, by the digest the lock
//     pins, runc is built, nothing else is, and the cell passes;
//   - the same cell in a later run, restored from the first job's cache,
//     which builds and downloads nothing and passes;
//   - the images.tar variant on a runner whose cache restores a corrupt
//     file, which must fail the job rather than be swallowed.
//
// No QEMU runs as root meanwhile. The repository being simulated commits
// the lock as this day's Debian gives it: the committed
// crictl-matrix.lock, re-pinned (`envctl fetch` of a copy) when Debian's
// mirror moved since it was written, with its image pushed to the store,
// as the lock's writer would.
func TestE2ECIRecipe(t *testing.T) {
	parallelGroup(t)
	blocks := ciBlocks(t)
	if len(blocks) < 2 || len(blocks[0].Jobs["cells"].Steps) == 0 || len(blocks[0].Jobs["cell"].Steps) == 0 {
		t.Fatalf("docs/ci.md has %d workflows, want the matrix workflow (jobs cells and cell) and the images.tar variant", len(blocks))
	}
	const cell = "cri-tools=1.34.0,runtime=runc@1.3.6"

	// The repository's lock, and its image in the store.
	dir := t.TempDir()
	for _, ext := range []string{".yaml", ".lock"} {
		b, err := os.ReadFile("../../profiles/crictl-matrix" + ext)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "crictl-matrix"+ext), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	profile := filepath.Join(dir, "crictl-matrix.yaml")
	if out, errOut, code := envctl(t, "fetch", profile); code != 0 {
		t.Fatalf("fetch crictl-matrix: exit %d\n%s%s", code, out, tail(errOut, 20))
	}
	reg := startRegistry(t)
	if out, errOut, code := envctl(t, "image", "push", reg.repo, profile); code != 0 {
		t.Fatalf("push: exit %d\n%s%s", code, out, errOut)
	}
	lockFile, err := os.ReadFile(filepath.Join(dir, "crictl-matrix.lock"))
	if err != nil {
		t.Fatal(err)
	}
	fixture := map[string]string{
		"runner.os":          "Linux",
		"matrix.cell":        cell,
		"strategy.job-index": "0",
		"hashFiles('profiles/crictl-matrix.lock')": hashFile(t, filepath.Join(dir, "crictl-matrix.lock")),
		"hashFiles('profiles/*.lock')":             "locks",
		"vars.ENVCTL_IMAGE_STORE":                  reg.repo,
	}
	caches := map[string]string{}
	runner := func() *hostedRunner {
		r := newHostedRunner(t, caches, fixture)
		r.repo = map[string][]byte{"profiles/crictl-matrix.lock": lockFile}
		return r
	}
	// The cache a run of the lock before this one saved: that lock pinned
	// another runc, so its cache has CRI-O's and crictl's builds (the
	// suite's, made by `make image`) and no image.
	earlier := suiteTemp(t, "envctl-e2e-actions-cache-")
	for _, build := range []string{"crio-1.34.0-", "crictl-1.34.0-"} {
		dirs, _ := filepath.Glob(filepath.Join(suiteCache(), "builds", build+"*"))
		if len(dirs) == 0 {
			t.Fatalf("the suite's cache has no %s* build (`envctl fetch crictl-matrix` made none)", build)
		}
		for _, d := range dirs {
			dst := filepath.Join(earlier, "0", "builds", filepath.Base(d))
			if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("cp", "-a", "-T", d, dst).CombinedOutput(); err != nil {
				t.Fatalf("copy %s: %v\n%s", d, err, out)
			}
		}
	}
	caches["envctl-Linux-0e1d2c3b4a5f6e7d8c9b0a1f2e3d4c5b6a7f8e9d0c1b2a3f4e5d6c7b8a9f0e1d"] = earlier

	watch := watchRootQEMU()
	defer func() {
		if seen := watch.Stop(); len(seen) > 0 {
			t.Errorf("QEMU ran as root:\n%s", strings.Join(seen, "\n"))
		}
	}()

	emit := runner()
	out, ok := emit.job(blocks[0].Jobs["cells"].Steps)
	if !ok || !strings.Contains(out["emit.matrix"], `"cell":"cri-tools=1.30.0,runtime=runc@1.3.6"`) {
		t.Fatalf("the emit job: ok=%v, matrix %q\n%s", ok, out["emit.matrix"], emit.log.String())
	}

	for _, want := range []struct {
		name, cache string
		built       bool
	}{
		{"the first cell job of this lock", "Cache restored from key: envctl-Linux-0e1d2c3b", true},
		{"a later job on the same cell", "Cache restored from key: envctl-Linux-" + fixture["hashFiles('profiles/crictl-matrix.lock')"], false},
	} {
		r := runner()
		start := time.Now()
		_, ok := r.job(blocks[0].Jobs["cell"].Steps)
		log := r.log.String()
		t.Logf("%s: ok=%v in %.0f s:\n%s", want.name, ok, time.Since(start).Seconds(), tail(log, 40))
		if !ok {
			t.Fatalf("%s failed", want.name)
		}
		junit, err := os.ReadFile(filepath.Join(r.workspace(), "junit.xml"))
		if err != nil || !strings.Contains(string(junit), "<testsuite") || strings.Contains(string(junit), "<failure") {
			t.Errorf("%s: junit.xml (%v) is no passing report:\n%s", want.name, err, junit)
		}
		if strings.Contains(log, "command not found") {
			t.Errorf("%s: a step ran a command its runner does not have", want.name)
		}
		if !strings.Contains(log, want.cache) {
			t.Errorf("%s: the cache step did not say %q", want.name, want.cache)
		}
		built := strings.Contains(log, "==> building ")
		fetched := strings.Contains(log, "==> fetching ") || strings.Contains(log, "==> pulling ")
		switch {
		case want.built && !strings.Contains(log, "==> building runc "):
			t.Errorf("%s did not build runc, which the restored cache lacks", want.name)
		case want.built && (strings.Contains(log, "==> building cri-o ") || strings.Contains(log, "==> building cri-tools ")):
			t.Errorf("%s built CRI-O or crictl again, which the restored cache has", want.name)
		case want.built && !strings.Contains(log, "==> pulling image debian-12"):
			t.Errorf("%s did not pull the image from the store", want.name)
		case !want.built && (built || fetched):
			t.Errorf("%s, restored from the first job's cache, built or downloaded again", want.name)
		}
	}

	// The images.tar variant, on a runner whose cache restores a corrupt file.
	corrupt := t.TempDir()
	if err := os.WriteFile(filepath.Join(corrupt, "0"), []byte("not a tarball"), 0o644); err != nil {
		t.Fatal(err)
	}
	caches["envctl-image-locks"] = corrupt
	imp := runner()
	steps := append([]ciStep{{Uses: "actions/checkout@v4"}, {Uses: "actions/setup-go@v5", With: map[string]string{"go-version": "1.26"}}, {Run: "go install ./cmd/envctl"}}, blocks[1].Jobs["snippet"].Steps...)
	_, ok = imp.job(steps)
	if log := imp.log.String(); ok || !strings.Contains(log, "$ if [ -f images.tar ]; then envctl image import images.tar; fi") {
		t.Errorf("the images.tar variant with a corrupt images.tar passed:\n%s", log)
	} else if strings.Contains(log, "$ envctl up") {
		t.Errorf("the job went on after the failed import:\n%s", log)
	}
	t.Logf("images.tar job:\n%s", tail(imp.log.String(), 15))
}
