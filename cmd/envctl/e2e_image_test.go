//go:build e2e

package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/archive"
	"github.com/envctl/envctl/profiles/lock"
)

// Image tests: builds that reproduce, from a snapshot of the archive
// state they record; locks that travel (the same on a cold cache); the
// image store on a real registry; a lock whose image the world moved past.

// suiteCache is the cache the suite's envctl runs use.
func suiteCache() string {
	if d := os.Getenv("ENVCTL_CACHE_DIR"); d != "" {
		return d
	}
	d, _ := os.UserCacheDir()
	return filepath.Join(d, "envctl")
}

// envctlWith runs envctl from the repository root with more environment
// (a cache of its own, say).
func envctlWith(t testing.TB, env []string, args ...string) (string, string, int) {
	t.Helper()
	cmd := exec.Command(bin(t), args...)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), env...)
	where := ""
	for _, e := range env {
		if c, ok := strings.CutPrefix(e, "ENVCTL_CACHE_DIR="); ok {
			where = "cache " + filepath.Base(c)
		}
	}
	return runLogged(t, cmd, where, args)
}

func cacheEnv(dir string) []string { return []string{"ENVCTL_CACHE_DIR=" + dir} }

// built is `envctl image build -o json`.
type built struct {
	Name, Disk, Kernel, Initrd, Snapshot, Recipe string
	Packages                                     map[string]string
}

func (b built) pin() lock.Image {
	return lock.Image{Name: b.Name, Kind: lock.ImageLocal, Digest: b.Disk, Format: "raw", Kernel: b.Kernel, Initrd: b.Initrd,
		Recipe: b.Recipe, Snapshot: b.Snapshot, Packages: b.Packages}
}

func buildImage(t *testing.T, cache string, env []string, args ...string) built {
	t.Helper()
	cmd := exec.Command(bin(t), append([]string{"image", "build", "debian-12", "-o", "json"}, args...)...)
	cmd.Dir = "../.."
	cmd.Env = append(append(os.Environ(), "ENVCTL_CACHE_DIR="+cache), env...)
	var errb bytes.Buffer
	cmd.Stderr = &errb
	start := time.Now()
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("image build %v %v: %v\n%s", env, args, err, tail(errb.String(), 20))
	}
	var b built
	if err := json.Unmarshal(out, &b); err != nil {
		t.Fatalf("image build -o json: %v\n%s", err, out)
	}
	t.Logf("built %s %s (archive state %s, %d packages) in %s (%v %v)", b.Name, b.Disk, b.Snapshot, len(b.Packages), time.Since(start).Round(time.Second), env, args)
	return b
}

// suiteTemp is a directory that outlives one test (removed by TestMain).
func suiteTemp(t *testing.T, pattern string) string {
	dir, err := os.MkdirTemp("", pattern)
	if err != nil {
		t.Fatal(err)
	}
	suiteCleanup = append(suiteCleanup, func() {
		_ = exec.Command("chmod", "-R", "u+w", dir).Run() // a Go module cache is read-only
		_ = os.RemoveAll(dir)
	})
	return dir
}

// suite is the suite's own build of debian-12 (`make image` keeps the
// packages it was built from in $ENVCTL_E2E_DEBS), or, when those are not
// there or not of this build, a build into a cache of its own that keeps
// them: made once, used by the tests that need the archive state.
var suite struct {
	once  sync.Once
	debs  string
	cache string // where the build is
	img   built
}

func suiteBuild(t *testing.T) (debs string, img built) {
	t.Helper()
	suite.once.Do(func() {
		if cur, ok := currentBuild(t, suiteCache()); ok && debsOf(os.Getenv("ENVCTL_E2E_DEBS"), cur.Packages) {
			suite.debs, suite.img, suite.cache = os.Getenv("ENVCTL_E2E_DEBS"), cur, suiteCache()
			t.Logf("the suite's build of debian-12 %s, with its packages from `make image`", cur.Disk)
			return
		}
		suite.debs, suite.cache = suiteTemp(t, "envctl-e2e-debs-"), suiteTemp(t, "envctl-e2e-build-cache-")
		suite.img = buildImage(t, suite.cache, []string{"ENVCTL_IMAGE_DEBS_OUT=" + suite.debs})
	})
	if suite.img.Disk == "" {
		t.Fatal("no build of debian-12 (see the first test that asked for it)")
	}
	return suite.debs, suite.img
}

// currentBuild is a cache's current build of debian-12, as `image ls`
// and the registry describe it.
func currentBuild(t *testing.T, cache string) (built, bool) {
	b, err := os.ReadFile(filepath.Join(cache, "images", "local.json"))
	if err != nil {
		return built{}, false
	}
	var locals map[string]built
	if json.Unmarshal(b, &locals) != nil {
		return built{}, false
	}
	l, ok := locals["debian-12"]
	return l, ok && l.Disk != "" && l.Snapshot != ""
}

// debsOf reports whether dir holds a .deb of every package of the set.
func debsOf(dir string, pkgs map[string]string) bool {
	if dir == "" || len(pkgs) == 0 {
		return false
	}
	have := debIndex(dir)
	for name, v := range pkgs {
		if _, ok := have[name+" "+v]; !ok {
			return false
		}
	}
	return true
}

// debIndex maps "name version" to each .deb in dir (the file name is
// name_version_arch.deb, with the epoch's colon escaped as %3a).
func debIndex(dir string) map[string]string {
	out := map[string]string{}
	files, _ := filepath.Glob(filepath.Join(dir, "*.deb"))
	for _, f := range files {
		parts := strings.SplitN(strings.TrimSuffix(filepath.Base(f), ".deb"), "_", 3)
		if len(parts) == 3 {
			out[parts[0]+" "+strings.ReplaceAll(parts[1], "%3a", ":")] = f
		}
	}
	return out
}

// coldCache is a new cache that holds nothing but the suite's image,
// exported from the suite's cache and imported.
func coldCache(t *testing.T) string {
	t.Helper()
	suiteBuild(t)
	tarball := filepath.Join(t.TempDir(), "debian-12.tar")
	if out, errOut, code := envctlWith(t, cacheEnv(suite.cache), "image", "export", tarball, "debian-12"); code != 0 {
		t.Fatalf("export: exit %d\n%s%s", code, out, errOut)
	}
	cold := suiteTemp(t, "envctl-e2e-cold-cache-")
	if out, errOut, code := envctlWith(t, cacheEnv(cold), "image", "import", tarball); code != 0 {
		t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
	}
	return cold
}

// TestE2EImageBuildIsReproducible: a build records the archive state it
// read; a second build, in another cache, from the snapshot archive at
// that state (a file:// copy in snapshot.debian.org's layout, made from
// the first build's packages) gives the same disk, kernel and initrd.
// Against the committed lock: the same packages must give the same
// digests; other packages mean Debian's mirror moved since the lock was
// written, which `envctl up` re-pins (TestE2EImageMovedSinceTheLock).
func TestE2EImageBuildIsReproducible(t *testing.T) {
	parallelGroup(t)
	debs, first := suiteBuild(t)
	if _, err := archive.ParseStamp(first.Snapshot); err != nil {
		t.Fatalf("the build recorded no archive state: %v", err)
	}
	snapshots := t.TempDir()
	makeArchive(t, debs, filepath.Join(snapshots, "debian", first.Snapshot), first.Snapshot, first.Packages, nil)
	second := buildImage(t, t.TempDir(), []string{"ENVCTL_DEBIAN_SNAPSHOT_URL=file://" + snapshots}, "--snapshot", first.Snapshot)
	if first.Disk != second.Disk || first.Kernel != second.Kernel || first.Initrd != second.Initrd || first.Snapshot != second.Snapshot {
		t.Errorf("two builds of one archive state differ:\n%+v\n%+v", first, second)
	}
	committed, err := lock.Read(shippedLock("crio-1.34-runc"))
	if err != nil {
		t.Fatal(err)
	}
	switch moved := images.PackageChanges(committed.Image.Packages, first.Packages); {
	case committed.Image.Recipe != first.Recipe:
		t.Errorf("the committed lock pins recipe %s, this envctl builds %s: re-pin the locks (`envctl image build debian-12 --update`)", committed.Image.Recipe, first.Recipe)
	case len(moved) == 0 && committed.Image.Digest != first.Disk:
		t.Errorf("the same recipe and packages as the committed lock gave disk %s, the lock pins %s: the build does not reproduce", first.Disk, committed.Image.Digest)
	case len(moved) > 0:
		t.Logf("Debian's mirror moved since the committed lock (archive state %s → %s): %s", committed.Image.Snapshot, first.Snapshot, strings.Join(moved, ", "))
	}
}

// makeArchive lays out a Debian archive of one suite (bookworm) at dir
// from the .deb files of the package set pkgs, as a mirror and snapshot.debian.org
// serve it: pool/, dists/bookworm/main/binary-amd64/Packages and a
// Release dated stamp (unsigned: a local copy is trusted). moved gives
// packages a new version (repacked with dpkg-deb): the archive then
// serves a state the mirror never had.
func makeArchive(t *testing.T, debs, dir, stamp string, pkgs, moved map[string]string) {
	t.Helper()
	date, err := archive.ParseStamp(stamp)
	if err != nil {
		t.Fatal(err)
	}
	pool := filepath.Join(dir, "pool")
	if err := os.MkdirAll(pool, 0o755); err != nil {
		t.Fatal(err)
	}
	index := debIndex(debs)
	var entries []string
	for name, v := range pkgs {
		if e, ok := index[name+" "+v]; ok {
			entries = append(entries, e)
		}
	}
	if len(entries) != len(pkgs) {
		t.Fatalf("the build kept %d of its %d packages", len(entries), len(pkgs))
	}
	for _, e := range entries {
		name := strings.SplitN(filepath.Base(e), "_", 2)[0]
		if v, ok := moved[name]; ok {
			repack(t, e, v, pool)
			continue
		}
		if err := os.Link(e, filepath.Join(pool, filepath.Base(e))); err != nil {
			t.Fatal(err)
		}
	}
	// The archive's priorities (minbase installs the "required" ones) come
	// from the mirror's lists, as dak's overrides do.
	lists, _ := filepath.Glob(filepath.Join(debs, "lists", "*_Packages"))
	if len(lists) == 0 {
		t.Fatal("the build kept no package lists")
	}
	var override strings.Builder
	for _, l := range lists {
		b, _ := os.ReadFile(l)
		for _, stanza := range strings.Split(string(b), "\n\n") {
			fields := map[string]string{}
			for _, line := range strings.Split(stanza, "\n") {
				if k, v, ok := strings.Cut(line, ": "); ok {
					fields[k] = v
				}
			}
			if fields["Package"] != "" && fields["Priority"] != "" {
				fmt.Fprintf(&override, "%s %s %s\n", fields["Package"], fields["Priority"], fields["Section"])
			}
		}
	}
	overrideFile := filepath.Join(t.TempDir(), "override")
	_ = os.WriteFile(overrideFile, []byte(override.String()), 0o644)
	scan := exec.Command("dpkg-scanpackages", "pool", overrideFile)
	scan.Dir = dir
	packages, err := scan.Output()
	if err != nil {
		t.Fatalf("dpkg-scanpackages: %v", err)
	}
	idx := filepath.Join(dir, "dists", "bookworm", "main", "binary-amd64")
	_ = os.MkdirAll(idx, 0o755)
	if err := os.WriteFile(filepath.Join(idx, "Packages"), packages, 0o644); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(packages)
	release := fmt.Sprintf("Origin: envctl test archive\nSuite: stable\nCodename: bookworm\nDate: %s\nArchitectures: amd64\nComponents: main\nSHA256:\n %s %d main/binary-amd64/Packages\n",
		date.UTC().Format(time.RFC1123), hex.EncodeToString(sum[:]), len(packages))
	if err := os.WriteFile(filepath.Join(dir, "dists", "bookworm", "Release"), []byte(release), 0o644); err != nil {
		t.Fatal(err)
	}
}

// repack writes deb with another version into pool.
func repack(t *testing.T, deb, version, pool string) {
	t.Helper()
	tree := t.TempDir()
	if out, err := exec.Command("dpkg-deb", "-R", deb, tree).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -R %s: %v\n%s", deb, err, out)
	}
	control := filepath.Join(tree, "DEBIAN", "control")
	b, _ := os.ReadFile(control)
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "Version: ") {
			l = "Version: " + version
		}
		lines = append(lines, l)
	}
	_ = os.WriteFile(control, []byte(strings.Join(lines, "\n")), 0o644)
	name := strings.SplitN(filepath.Base(deb), "_", 2)[0]
	if out, err := exec.Command("dpkg-deb", "-Zxz", "-b", tree, filepath.Join(pool, name+"_"+version+"_all.deb")).CombinedOutput(); err != nil {
		t.Fatalf("dpkg-deb -b: %v\n%s", err, out)
	}
}

// TestE2ELockIsTheSameOnAColdCache: locking one profile in a cache that
// holds nothing but the image (imported), with a Go module cache of its
// own, and in the suite's warm cache gives the same lock: every commit,
// where it came from, every module sum and every binary digest, crictl's
// included (its proxy records no origin: the commit is the catalog's).
func TestE2ELockIsTheSameOnAColdCache(t *testing.T) {
	parallelGroup(t)
	cold := coldCache(t)
	src, _ := os.ReadFile("../../profiles/crio-1.34-runc.yaml")
	a, b := filepath.Join(t.TempDir(), "p.yaml"), filepath.Join(t.TempDir(), "p.yaml")
	_ = os.WriteFile(a, src, 0o644)
	_ = os.WriteFile(b, src, 0o644)
	gomod := suiteTemp(t, "envctl-e2e-gomodcache-")
	start := time.Now()
	if out, errOut, code := envctlWith(t, append(cacheEnv(cold), "GOMODCACHE="+gomod), "lock", a); code != 0 {
		t.Fatalf("lock on a cold cache: exit %d\n%s%s", code, out, tail(errOut, 30))
	}
	t.Logf("locked on a cold cache (and an empty Go module cache) in %s", time.Since(start).Round(time.Second))
	if out, errOut, code := envctl(t, "lock", b); code != 0 {
		t.Fatalf("lock on the warm cache: exit %d\n%s%s", code, out, errOut)
	}
	la, _ := lock.Read(strings.TrimSuffix(a, ".yaml") + ".lock")
	lb, _ := lock.Read(strings.TrimSuffix(b, ".yaml") + ".lock")
	for _, d := range lock.Content(lock.Diff(la, lb)) {
		if d.Part == "image" && len(images.PackageChanges(la.Image.Packages, lb.Image.Packages)) > 0 {
			continue // the mirror moved between the two image builds: not this test's business
		}
		t.Errorf("cold and warm locks differ: %s %s %s: %s vs %s", d.Cell, d.Part, d.Field, d.A, d.B)
	}
	out, errOut, code := envctl(t, "diff", strings.TrimSuffix(a, ".yaml")+".lock", strings.TrimSuffix(b, ".yaml")+".lock", "--exit-code")
	t.Logf("envctl diff --exit-code: exit %d\n%s%s", code, out, errOut)
	crictl, _ := la.Artifact("cri-tools@1.34.0/gomod")
	if crictl.Origin == nil || crictl.Origin.Commit != "ca0237b9fec5b675b0bb7bc96b7496e6d54f5ccb" || crictl.Origin.Source != lock.CommitFromCatalog {
		t.Errorf("crictl's origin on the cold cache: %+v", crictl.Origin)
	}
}

// TestE2EFetchSkipImage: `fetch --locked --skip-image` on a cache that
// has the components but not the locked image (and a mirror that serves
// nothing) fetches no image: it neither builds nor pulls one, and says so.
// `make image` prefetches every shipped profile's components this way
// beside its image builds.
func TestE2EFetchSkipImage(t *testing.T) {
	f := suiteLock(t)
	machine := linkedCache(t, f.Image)
	env := append(cacheEnv(machine), "ENVCTL_DEBIAN_MIRROR=file://"+t.TempDir(), "ENVCTL_DEBIAN_SNAPSHOT_URL=file://"+t.TempDir())
	out, errOut, code := envctlWith(t, env, "fetch", "crio-1.34-runc", "--locked", "--skip-image")
	if code != 0 || !strings.Contains(out, "image debian-12 "+f.Image.Digest+" not fetched (--skip-image)") || !strings.Contains(out, "all artifacts present") {
		t.Fatalf("fetch --skip-image: exit %d\n%s%s", code, out, errOut)
	}
	if strings.Contains(errOut, "building image") || strings.Contains(errOut, "pulling image") {
		t.Errorf("fetch --skip-image went for the image:\n%s", errOut)
	}
	if _, err := os.Stat(filepath.Join(machine, "blobs", "sha256", strings.TrimPrefix(f.Image.Digest, "sha256:"))); err == nil {
		t.Errorf("fetch --skip-image put the image %s in the cache", f.Image.Digest)
	}
}

// registry is a real OCI registry (Debian's docker-registry, the CNCF
// distribution registry) serving on 127.0.0.1 from a directory.
type registry struct {
	repo, data string
}

func startRegistry(t *testing.T) registry {
	t.Helper()
	bin, err := exec.LookPath("docker-registry")
	if err != nil {
		t.Fatal("docker-registry is not installed (`make host` installs it)")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	config := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", data, addr)
	_ = os.WriteFile(filepath.Join(dir, "config.yml"), []byte(config), 0o644)
	cmd := exec.Command(bin, "serve", filepath.Join(dir, "config.yml"))
	logf, _ := os.Create(filepath.Join(dir, "registry.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); logf.Close() })
	for i := 0; ; i++ {
		resp, err := http.Get("http://" + addr + "/v2/")
		if err == nil {
			resp.Body.Close()
			break
		}
		if i > 100 {
			t.Fatalf("the registry did not answer on %s", addr)
		}
		time.Sleep(100 * time.Millisecond)
	}
	return registry{repo: addr + "/envctl/images", data: data}
}

// blob is where the registry keeps a blob.
func (r registry) blob(digest string) string {
	hex := strings.TrimPrefix(digest, "sha256:")
	return filepath.Join(r.data, "docker", "registry", "v2", "blobs", "sha256", hex[:2], hex, "data")
}

// layers reads the manifest a tag points at: its layer digests by media type.
func (r registry) layers(t *testing.T, tag string) map[string]string {
	t.Helper()
	host, repo, _ := strings.Cut(r.repo, "/")
	req, _ := http.NewRequest(http.MethodGet, "http://"+host+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m struct {
		Layers []struct{ MediaType, Digest string }
	}
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil || len(m.Layers) == 0 {
		t.Fatalf("manifest %s: %v", tag, err)
	}
	out := map[string]string{}
	for _, l := range m.Layers {
		out[l.MediaType] = l.Digest
	}
	return out
}

// linkedCache is a copy of the suite's cache made of hard links (the
// cache only ever replaces files, never writes into them), without its
// saved guests and temporary files, and without the given images.
func linkedCache(t *testing.T, drop ...lock.Image) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "cache")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(suiteCache())
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if slices.Contains([]string{"warm", "boot", "tmp", "locks"}, e.Name()) {
			continue
		}
		if out, err := exec.Command("cp", "-al", filepath.Join(suiteCache(), e.Name()), dir).CombinedOutput(); err != nil {
			t.Fatalf("cp -al: %v\n%s", err, out)
		}
	}
	for _, img := range drop {
		for _, d := range []string{img.Digest, img.Kernel, img.Initrd} {
			_ = os.Remove(filepath.Join(dir, "blobs", "sha256", strings.TrimPrefix(d, "sha256:")))
			_ = os.Remove(filepath.Join(dir, "stamps", "sha256", strings.TrimPrefix(d, "sha256:")))
		}
	}
	if len(drop) > 0 {
		_ = os.Remove(filepath.Join(dir, "images", "local.json"))
		_ = os.Remove(filepath.Join(dir, "images", "known.json"))
	}
	return dir
}

// suiteLock is the lock the suite runs crio-1.34-runc with (the copy of
// the committed one, re-pinned if the world moved), with its image and
// components in the suite's cache.
func suiteLock(t *testing.T) *lock.File {
	t.Helper()
	if out, errOut, code := envctl(t, "fetch", "crio-1.34-runc"); code != 0 {
		t.Fatalf("fetch: exit %d\n%s%s", code, out, errOut)
	}
	f, err := lock.Read(filepath.Join(os.Getenv("ENVCTL_PROFILES_DIR"), "crio-1.34-runc.lock"))
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestE2EImageStore: the locked image goes into a real OCI registry
// process on 127.0.0.1 and comes back into an empty cache by the digest
// its lock pins; `up --locked --no-test` on a machine without the image
// pulls it from the store (ENVCTL_IMAGE_STORE), boots it, installs and
// verifies (the provenance is the point here: TestE2ECIRecipe runs the
// test on a store's image); a blob changed in the
// registry is refused (exit 3) and nothing of it is installed.
func TestE2EImageStore(t *testing.T) {
	f := suiteLock(t)
	reg := startRegistry(t)
	out, errOut, code := envctl(t, "image", "push", reg.repo, "crio-1.34-runc")
	if code != 0 || !strings.Contains(out, "pushed "+reg.repo+"@sha256:") {
		t.Fatalf("push: exit %d\n%s%s", code, out, errOut)
	}

	empty := t.TempDir()
	out, errOut, code = envctlWith(t, cacheEnv(empty), "image", "pull", "crio-1.34-runc", "--image-store", reg.repo)
	if code != 0 || !strings.Contains(out, f.Image.Digest) {
		t.Fatalf("pull into an empty cache: exit %d\n%s%s", code, out, errOut)
	}
	out, _, _ = envctlWith(t, cacheEnv(empty), "image", "ls", "-o", "json")
	var rows []struct {
		Name, Kind, Digest string
		Cached             bool
	}
	_ = json.Unmarshal([]byte(out), &rows)
	if !slices.ContainsFunc(rows, func(r struct {
		Name, Kind, Digest string
		Cached             bool
	}) bool {
		return r.Kind == "local" && r.Digest == f.Image.Digest && r.Cached
	}) {
		t.Errorf("the pulled image is not the locked one, cached:\n%s", out)
	}
	if out, errOut, code := envctlWith(t, cacheEnv(empty), "cache", "verify"); code != 0 {
		t.Errorf("cache verify after pull: exit %d\n%s%s", code, out, errOut)
	}

	// A machine with the stack but not the image: up pulls it by digest.
	machine := linkedCache(t, f.Image)
	out, errOut, code = envctlWith(t, append(cacheEnv(machine), "ENVCTL_IMAGE_STORE="+reg.repo), "up", "crio-1.34-runc", "--locked", "--cold", "--no-test", "-o", "json")
	t.Logf("stderr:\n%s", errOut)
	r := parseReport(t, out)
	if code != 0 || r.Verdict != "ready" || r.Image == nil || r.Image.From != "store" || r.Image.Digest != f.Image.Digest {
		t.Fatalf("up from the image store: exit %d, verdict %s, image %+v", code, r.Verdict, r.Image)
	}
	if strings.Contains(errOut, "building image") {
		t.Error("up built an image although the store had it")
	}

	// The registry now serves a kernel blob with one byte changed.
	kernel := reg.layers(t, strings.Replace(f.Image.Digest, ":", "-", 1))["application/vnd.envctl.image.kernel.v1+zstd"]
	data, err := os.ReadFile(reg.blob(kernel))
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(reg.blob(kernel), data, 0o644); err != nil {
		t.Fatal(err)
	}
	victim := t.TempDir()
	_, errOut, code = envctlWith(t, cacheEnv(victim), "image", "pull", "crio-1.34-runc", "--image-store", reg.repo)
	// One line of error (the transfer's progress lines, "==> …", aside).
	if errs := errorLines(errOut); code != 3 || len(errs) != 1 || !strings.Contains(errs[0], "nothing was installed") {
		t.Errorf("a changed blob: exit %d\n%s", code, errOut)
	}
	if blobs, _ := filepath.Glob(filepath.Join(victim, "blobs", "*", "*")); len(blobs) != 0 {
		t.Errorf("a changed blob left %v in the cache", blobs)
	}
	assertClean(t)
}

// TestE2EImageMovedSinceTheLock: a lock pins an image whose packages
// this machine cannot get any more (built from a mirror where netbase had
// another version: what a Debian point release does to a committed lock).
// `up --locked` refuses at once (exit 2), naming the package that moved
// and the ways out; plain `up` re-pins the image, says so in one block,
// and passes; with the pinned image imported from a tarball exported on
// another cache, `up --locked --no-test` boots it, installs and verifies,
// with no build.
func TestE2EImageMovedSinceTheLock(t *testing.T) {
	parallelGroup(t)
	f := suiteLock(t)
	debs, base := suiteBuild(t)
	mirror := t.TempDir()
	makeArchive(t, debs, mirror, base.Snapshot, base.Packages, map[string]string{"netbase": "6.4+envctl1"})
	other := t.TempDir()
	moved := buildImage(t, other, nil, "--mirror", "file://"+mirror)
	if moved.Packages["netbase"] != "6.4+envctl1" || moved.Disk == base.Disk {
		t.Fatalf("the build from the moved mirror: netbase %s, disk %s", moved.Packages["netbase"], moved.Disk)
	}
	tarball := filepath.Join(t.TempDir(), "debian-12.tar")
	if out, errOut, code := envctlWith(t, cacheEnv(other), "image", "export", tarball, "debian-12"); code != 0 {
		t.Fatalf("export: exit %d\n%s%s", code, out, errOut)
	}

	dir := t.TempDir()
	src, _ := os.ReadFile("../../profiles/crio-1.34-runc.yaml")
	profile := filepath.Join(dir, "moved.yaml")
	_ = os.WriteFile(profile, src, 0o644)
	pinMoved := func() {
		t.Helper()
		pinned := *f
		pinned.Image = moved.pin()
		if err := lock.Write(filepath.Join(dir, "moved.lock"), &pinned); err != nil {
			t.Fatal(err)
		}
	}
	pinMoved()
	machine := linkedCache(t)
	// A state directory of its own: the test runs beside others
	// (parallelGroup), whose domains are theirs to account for.
	own := newRunner(t)
	env := append(cacheEnv(machine), "ENVCTL_STATE_DIR="+own.state)
	wantMoved := "netbase 6.4+envctl1 → " + f.Image.Packages["netbase"]

	start := time.Now()
	_, errOut, code := envctlWith(t, env, "up", profile, "--locked", "--cold")
	if code != 2 || !strings.Contains(errOut, wantMoved) || !strings.Contains(errOut, "envctl image import") || strings.Contains(errOut, "booting") {
		t.Errorf("--locked with a moved image: exit %d after %s\n%s", code, time.Since(start).Round(time.Second), errOut)
	}

	out, errOut, code := envctlWith(t, env, "up", profile, "--cold", "-o", "json")
	t.Logf("stderr:\n%s", errOut)
	r := parseReport(t, out)
	if code != 0 || r.Verdict != "pass" {
		t.Fatalf("plain up after the mirror moved: exit %d, verdict %s, error %s", code, r.Verdict, r.Error)
	}
	for _, want := range []string{wantMoved, "the runtime stack is unchanged", "lock updated: review and commit it"} {
		if !strings.Contains(errOut, want) {
			t.Errorf("the re-pin notice lacks %q", want)
		}
	}
	if r.Image == nil || r.Image.Repin == nil || r.Image.Digest == moved.Disk || r.Image.Repin.Was != moved.Disk {
		t.Errorf("the report's image: %+v", r.Image)
	}
	repinned, _ := lock.Read(filepath.Join(dir, "moved.lock"))
	for _, d := range lock.Diff(f, repinned) {
		if d.Part != "image" {
			t.Errorf("the re-pin changed %s %s: %s → %s", d.Part, d.Field, d.A, d.B)
		}
	}

	pinMoved()
	if out, errOut, code := envctlWith(t, env, "image", "import", tarball); code != 0 || !strings.Contains(out, moved.Disk) {
		t.Fatalf("import: exit %d\n%s%s", code, out, errOut)
	}
	out, errOut, code = envctlWith(t, env, "up", profile, "--locked", "--cold", "--no-test", "-o", "json")
	r = parseReport(t, out)
	if code != 0 || r.Verdict != "ready" || r.Image == nil || r.Image.From != "cache" || r.Image.Digest != moved.Disk {
		t.Errorf("--locked after import: exit %d, verdict %s, image %+v\n%s", code, r.Verdict, r.Image, errOut)
	}
	if strings.Contains(errOut, "building image") {
		t.Error("up built an image after the import")
	}
	own.noEnvsLeft(t)
}

// TestE2EImageOnASecondDay: Debian re-dates its Release files every day,
// whether or not a package changed. A machine without the locked image,
// on a later day, builds it from a mirror that serves the very same
// packages with Release files dated a day after the lock's archive state:
// the build is the lock's image, `fetch --locked` takes it, and neither
// that nor `envctl lock` rewrites the lock; the cache learns the lock's
// archive state for that disk.
func TestE2EImageOnASecondDay(t *testing.T) {
	parallelGroup(t)
	f := suiteLock(t)
	debs, base := suiteBuild(t)
	if base.Disk != f.Image.Digest {
		t.Fatalf("the suite's lock pins %s, the suite's build is %s", f.Image.Digest, base.Disk)
	}
	day, _ := archive.ParseStamp(lock.EarliestState(f.Image.Snapshot, base.Snapshot))
	// A later day, but not in the future: apt refuses a Release file
	// that is not valid yet (a lock re-pinned yesterday is recent).
	laterDay := day.Add(36 * time.Hour)
	if now := time.Now().UTC().Add(-time.Minute); laterDay.After(now) {
		laterDay = now.Truncate(time.Second)
	}
	if !laterDay.After(day) {
		t.Skipf("the lock's archive state %s is less than a minute old: no later day to serve", day)
	}
	later := laterDay.Format(archive.StampLayout)
	mirror := t.TempDir()
	makeArchive(t, debs, mirror, later, base.Packages, nil)

	dir := t.TempDir()
	src, _ := os.ReadFile(filepath.Join(os.Getenv("ENVCTL_PROFILES_DIR"), "crio-1.34-runc.yaml"))
	profile, lockPath := filepath.Join(dir, "day2.yaml"), filepath.Join(dir, "day2.lock")
	_ = os.WriteFile(profile, src, 0o644)
	pinned, _ := os.ReadFile(filepath.Join(os.Getenv("ENVCTL_PROFILES_DIR"), "crio-1.34-runc.lock"))
	_ = os.WriteFile(lockPath, pinned, 0o644)

	machine := linkedCache(t, f.Image)
	env := append(cacheEnv(machine), "ENVCTL_DEBIAN_MIRROR=file://"+mirror, "ENVCTL_DEBIAN_SNAPSHOT_URL=file://"+t.TempDir())
	out, errOut, code := envctlWith(t, env, "fetch", profile, "--locked")
	if code != 0 || !strings.Contains(out, "image debian-12 "+f.Image.Digest+" from build") || !strings.Contains(errOut, "building image debian-12 from the mirror") {
		t.Fatalf("fetch --locked on a second day: exit %d\n%s%s", code, out, tail(errOut, 30))
	}
	if now, _ := os.ReadFile(lockPath); !bytes.Equal(now, pinned) {
		t.Errorf("fetch rewrote the lock on a second day:\n%s", now)
	}
	known, _ := os.ReadFile(filepath.Join(machine, "images", "known.json"))
	var builds map[string]built
	_ = json.Unmarshal(known, &builds)
	if b := builds[f.Image.Digest]; b.Snapshot != f.Image.Snapshot {
		t.Errorf("the second day's build of %s records archive state %q; it read %s, the lock knows the earlier %s", f.Image.Digest, b.Snapshot, later, f.Image.Snapshot)
	}
	out, errOut, code = envctlWith(t, env, "lock", profile)
	if code != 0 || !strings.Contains(out, "is unchanged") {
		t.Errorf("lock on a second day: exit %d\n%s%s", code, out, errOut)
	}
	if now, _ := os.ReadFile(lockPath); !bytes.Equal(now, pinned) {
		t.Errorf("envctl lock rewrote the lock on a second day:\n%s", now)
	}
}

// TestE2EExampleProfiles: every shipped profile has a committed lock that
// is current, and locking a copy of it on this machine (a cold cache in
// CI) reproduces its runtime stack exactly: every version, commit, source
// of the commit, module sum and binary digest. The image either matches,
// or differs only as `up` reports it: other package versions, because
// Debian's mirror moved since the lock was written (the same recipe and
// the same packages must give the same digests).
func TestE2EExampleProfiles(t *testing.T) {
	dir := t.TempDir()
	for _, p := range []string{"crio-1.34-runc", "crio-1.34-crun", "crio-1.34-crun-1.8.1", "seed-crictl-1.30", "crictl-matrix"} {
		out, errOut, code := envctl(t, "show", p, "-o", "json")
		if code != 0 || !strings.Contains(out, `"cells"`) {
			t.Errorf("show %s: exit %d %s", p, code, errOut)
		}
		src, _ := os.ReadFile("../../profiles/" + p + ".yaml")
		copyPath := filepath.Join(dir, p+".yaml")
		_ = os.WriteFile(copyPath, src, 0o644)
		if out, errOut, code := envctl(t, "lock", copyPath); code != 0 {
			t.Errorf("lock a copy of %s: exit %d %s%s", p, code, out, errOut)
			continue
		}
		committed, err := lock.Read(shippedLock(p))
		if err != nil {
			t.Fatal(err)
		}
		here, _ := lock.Read(filepath.Join(dir, p+".lock"))
		moved := images.PackageChanges(committed.Image.Packages, here.Image.Packages)
		// What must be equal: the runtime stack, the image's digests and
		// packages. The archive state is provenance (a later day reads a
		// later Release date for the same packages): not compared.
		for _, d := range lock.Content(lock.Diff(committed, here)) {
			switch {
			case d.Part != "image":
				t.Errorf("%s: the runtime stack differs from the committed lock: cell %s %s %s: %s here, %s committed", p, d.Cell, d.Part, d.Field, d.B, d.A)
			case d.Field == "recipe":
				t.Errorf("%s: the committed lock pins image recipe %s, this envctl builds %s: re-pin the locks", p, d.A, d.B)
			case len(moved) == 0:
				t.Errorf("%s: the same packages gave image %s %s, the committed lock pins %s: the image build does not reproduce", p, d.Field, d.B, d.A)
			}
		}
		if len(moved) > 0 {
			t.Logf("%s: Debian's mirror moved since the committed lock; `envctl up` re-pins its image (%s)", p, strings.Join(moved, ", "))
		}
	}
	out, _, _ := envctl(t, "show", "crictl-matrix")
	if n := strings.Count(out, "cri-tools    cri-tools"); n != 8 {
		t.Errorf("crictl-matrix shows %d cells, want 8:\n%s", n, out)
	}
}

// TestE2ESilentImageStore: an image store that accepts connections and
// never answers cannot hang envctl. `image pull` ends within the registry
// timeouts, and `up` (which pulls a locked image missing from the cache
// before any phase limit applies) within `--timeout`. Both exit 3 with one
// line; no VM is booted.
func TestE2ESilentImageStore(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c) // held open, never answered
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	}()
	store := ln.Addr().String() + "/envctl/images"
	r := newRunner(t, "ENVCTL_CACHE_DIR="+t.TempDir())
	for _, tc := range []struct {
		name  string
		args  []string
		limit time.Duration
	}{
		{"image pull", []string{"image", "pull", "crio-1.34-runc", "--image-store", store}, 75 * time.Second},
		{"up --timeout 20s", []string{"up", "crio-1.34-runc", "--locked", "--image-store", store, "--timeout", "20s"}, 40 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, errOut, code := r.run(tc.args...)
			took := time.Since(start)
			t.Logf("%s: exit %d in %.1fs: %s", tc.name, code, took.Seconds(), lastError(errOut))
			if code != 3 || took > tc.limit {
				t.Fatalf("exit %d after %s, want 3 within %s", code, took, tc.limit)
			}
		})
	}
	r.noEnvsLeft(t)
}

// errorLines are the lines of stderr that are not progress ("==> …").
func errorLines(stderr string) []string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(stderr), "\n") {
		if l != "" && !strings.HasPrefix(l, "==> ") {
			out = append(out, l)
		}
	}
	return out
}
