package pin

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/lock"
)

// upstream serves files in the exact upstream release layout, keyed by path.
type upstream struct {
	mu    sync.Mutex
	files map[string][]byte
}

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	u.mu.Lock()
	b, ok := u.files[r.URL.Path]
	u.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Write(b)
}

func (u *upstream) set(path string, b []byte) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.files[path] = b
}

func hexSum(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

// newUpstream builds release artifacts for CRI-O 1.34.0, crictl 1.34.0,
// runc 1.3.6 and crun 1.8.1 with checksum files in each project's format.
func newUpstream() *upstream {
	u := &upstream{files: map[string][]byte{}}
	crio := []byte("cri-o bundle")
	crictl := []byte("crictl tarball")
	runc := []byte("runc binary")
	crun := []byte("crun binary")
	u.files["/storage.googleapis.com/cri-o/artifacts/cri-o.amd64.v1.34.0.tar.gz"] = crio
	u.files["/storage.googleapis.com/cri-o/artifacts/cri-o.amd64.v1.34.0.tar.gz.sha256sum"] = []byte(hexSum(crio) + "  cri-o.amd64.v1.34.0.tar.gz\n")
	u.files["/github.com/kubernetes-sigs/cri-tools/releases/download/v1.34.0/crictl-v1.34.0-linux-amd64.tar.gz"] = crictl
	u.files["/github.com/kubernetes-sigs/cri-tools/releases/download/v1.34.0/crictl-v1.34.0-linux-amd64.tar.gz.sha256"] = []byte(hexSum(crictl))
	u.files["/github.com/opencontainers/runc/releases/download/v1.3.6/runc.amd64"] = runc
	u.files["/github.com/opencontainers/runc/releases/download/v1.3.6/runc.sha256sum"] = []byte(
		hexSum([]byte("arm")) + "  runc.arm64\n" + hexSum(runc) + "  runc.amd64\n" + hexSum([]byte("t")) + "  runc.tar.xz\n")
	u.files["/github.com/containers/crun/releases/download/1.8.1/crun-1.8.1-linux-amd64"] = crun
	u.files["/github.com/containers/crun/releases/download/1.8.1/CHECKSUMS"] = []byte(
		hexSum(crun) + "  crun-1.8.1-linux-amd64\n" + hexSum([]byte("x")) + "  crun-1.8.1-linux-arm64\n")
	return u
}

// testCatalog is the embedded catalog with upstream hosts moved onto srv.
func testCatalog(t *testing.T, srv string) *catalog.Catalog {
	text := strings.NewReplacer("https://github.com", srv+"/github.com", "https://storage.googleapis.com", srv+"/storage.googleapis.com").Replace(string(catalog.Embedded()))
	c, err := catalog.Parse([]byte(text))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

const profileYAML = `name: t
image: debian-12
source: %s
components:
  cri-o:     {version: "1.34.0"}
  cri-tools: {version: "~> 1.34.0"}
  runtime:   {name: runc, version: "1.3.6"}
%s`

func loadProfile(t *testing.T, source, extra string) *profiles.Profile {
	dir := t.TempDir()
	path := filepath.Join(dir, "t.yaml")
	os.WriteFile(path, []byte(fmt.Sprintf(profileYAML, source, extra)), 0o644)
	p, err := profiles.Parse(path, []byte(fmt.Sprintf(profileYAML, source, extra)), nil)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newResolver(t *testing.T, cat *catalog.Catalog) *Resolver {
	c, err := cache.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return &Resolver{Catalog: cat, Images: images.NewStore(c), Arch: "amd64",
		ModuleSum: func(_ context.Context, m, v string) (string, error) { return fakeSum(m, v), nil },
		// Every module is its release commit, unless a test says otherwise.
		ModuleInfo: func(_ context.Context, m, v string) (Info, error) {
			comp := componentOfModule(cat, m)
			rel, _ := comp.Upstream(v)
			return Info{Path: m, Version: v, Time: rel.Time, Origin: &Origin{VCS: "git", Hash: rel.Commit}}, nil
		}}
}

// fakeSum is a module sum of the right form for module@version.
func fakeSum(m, v string) string {
	h := sha256.Sum256([]byte(m + "@" + v))
	return "h1:" + base64.StdEncoding.EncodeToString(h[:])
}

func componentOfModule(cat *catalog.Catalog, module string) *catalog.Component {
	for _, n := range cat.Names() {
		c, _ := cat.Get(n)
		if c.GoMod != nil && c.GoMod.Module == module {
			return c
		}
	}
	return &catalog.Component{}
}

func TestLockRelease(t *testing.T) {
	up := newUpstream()
	srv := httptest.NewServer(up)
	defer srv.Close()
	r := newResolver(t, testCatalog(t, srv.URL))
	p := loadProfile(t, "release", "matrix:\n  runtime: [runc@1.3.6, crun@1.8.1]\n")
	f, err := r.Lock(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"cri-o@1.34.0/release":     hexSum([]byte("cri-o bundle")),
		"cri-tools@1.34.0/release": hexSum([]byte("crictl tarball")),
		"runc@1.3.6/release":       hexSum([]byte("runc binary")),
		"crun@1.8.1/release":       hexSum([]byte("crun binary")),
	}
	for key, sum := range want {
		a, ok := f.Artifact(key)
		if !ok {
			t.Errorf("lock lacks %s", key)
			continue
		}
		if a.SHA256 != sum || !strings.HasPrefix(a.URL, srv.URL) {
			t.Errorf("%s: %+v", key, a)
		}
	}
	if len(f.Cells) != 2 || f.ProfileHash != p.Hash() || f.Image.Name != "debian-12" || f.Image.Kind != lock.ImageDownload || !strings.HasPrefix(f.Image.Digest, "sha512:") {
		t.Errorf("lock = %+v", f)
	}

	// Round trip and drift check (the pipeline records the binaries'
	// digests after fetching them).
	for i := range f.Artifacts {
		if f.Artifacts[i].CarriesFiles() {
			f.Artifacts[i].Binaries = map[string]string{"bin": strings.Repeat("0", 64)}
		}
	}
	if err := lock.Write(p.LockPath(), f); err != nil {
		t.Fatal(err)
	}
	if _, err := lock.ForProfile(p, "amd64"); err != nil {
		t.Errorf("fresh lock refused: %v", err)
	}
	changed := loadProfile(t, "release", "")
	changed.Path = p.Path
	_, err = lock.ForProfile(changed, "amd64")
	var stale *lock.StaleError
	if !errors.As(err, &stale) || !strings.Contains(err.Error(), "dropped matrix.runtime") || fault.ClassOf(err) != fault.Input {
		t.Errorf("changed profile: err = %v", err)
	}
	c, _ := cache.New(t.TempDir())

	// The locked digest guards the download: a re-published file is refused
	// and never enters the cache.
	a, _ := f.Artifact("runc@1.3.6/release")
	d, _ := cache.ParseDigest("sha256:" + a.SHA256)
	if _, err := c.Fetch(context.Background(), a.URL, d); err != nil {
		t.Fatalf("fetch: %v", err)
	}
	b, _ := f.Artifact("crun@1.8.1/release")
	up.set(strings.TrimPrefix(b.URL, srv.URL), []byte("tampered"))
	db, _ := cache.ParseDigest("sha256:" + b.SHA256)
	_, err = c.Fetch(context.Background(), b.URL, db)
	var mm *cache.MismatchError
	if !errors.As(err, &mm) || !strings.Contains(err.Error(), b.URL) || !strings.Contains(err.Error(), b.SHA256) || !strings.Contains(err.Error(), hexSum([]byte("tampered"))) {
		t.Errorf("mismatch error = %v", err)
	}
	if _, ok := c.Has(db); ok {
		t.Error("a corrupt download entered the cache")
	}
}

func TestLockMirror(t *testing.T) {
	srv := httptest.NewServer(newUpstream())
	defer srv.Close()
	r := newResolver(t, catalog.Default())
	r.Mirror = srv.URL
	f, err := r.Lock(context.Background(), loadProfile(t, "mirror", ""))
	if err != nil {
		t.Fatal(err)
	}
	a, _ := f.Artifact("cri-tools@1.34.0/mirror")
	if a.URL != srv.URL+"/github.com/kubernetes-sigs/cri-tools/releases/download/v1.34.0/crictl-v1.34.0-linux-amd64.tar.gz" || a.SHA256 != hexSum([]byte("crictl tarball")) {
		t.Errorf("mirror artifact %+v", a)
	}
}

func TestLockErrors(t *testing.T) {
	up := newUpstream()
	srv := httptest.NewServer(up)
	defer srv.Close()
	tests := []struct {
		name   string
		mutate func()
		source string
		want   []string
		class  fault.Class
	}{
		{"404 checksum", func() {
			delete(up.files, "/github.com/kubernetes-sigs/cri-tools/releases/download/v1.34.0/crictl-v1.34.0-linux-amd64.tar.gz.sha256")
		}, "release", []string{"cri-tools", "crictl-v1.34.0-linux-amd64.tar.gz.sha256", "HTTP 404"}, fault.Infra},
		{"checksum file lacks entry", func() {
			up.files["/github.com/opencontainers/runc/releases/download/v1.3.6/runc.sha256sum"] = []byte(hexSum([]byte("a")) + "  runc.arm64\n")
		}, "release", []string{"runc.sha256sum", "no line for runc.amd64", "runc.arm64"}, fault.Infra},
		{"garbage hex checksum", func() {
			up.files["/github.com/kubernetes-sigs/cri-tools/releases/download/v1.34.0/crictl-v1.34.0-linux-amd64.tar.gz.sha256"] = []byte("<html>")
		}, "release", []string{"bare sha256"}, fault.Infra},
		{"mirror unset", func() {}, "mirror", []string{"ENVCTL_MIRROR"}, fault.Input},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			up.files = newUpstream().files
			tt.mutate()
			r := newResolver(t, testCatalog(t, srv.URL))
			_, err := r.Lock(context.Background(), loadProfile(t, tt.source, ""))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if fault.ClassOf(err) != tt.class {
				t.Errorf("class %v, want %v", fault.ClassOf(err), tt.class)
			}
		})
	}
}

func TestLockUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there any more
	r := newResolver(t, testCatalog(t, url))
	_, err := r.Lock(context.Background(), loadProfile(t, "release", ""))
	if err == nil || !strings.Contains(err.Error(), "cannot reach") || !strings.Contains(err.Error(), url) {
		t.Errorf("unreachable: %v", err)
	}
}

func TestLockGoModAndFile(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "crun")
	os.WriteFile(bin, []byte("crun 1.8.1"), 0o755)
	r := newResolver(t, catalog.Default())
	p := loadProfile(t, "gomod", fmt.Sprintf("matrix:\n  runtime:\n    - {name: crun, version: \"1.8.1\", source: \"file://%s\"}\n", bin))
	f, err := r.Lock(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	crio, _ := f.Artifact("cri-o@1.34.0/gomod")
	if crio.Module != "github.com/cri-o/cri-o" || crio.ModuleSum != fakeSum("github.com/cri-o/cri-o", "v1.34.0") || crio.Recipe != "crio" {
		t.Errorf("gomod artifact %+v", crio)
	}
	crun, ok := f.Artifact("crun@1.8.1/file://" + bin)
	if !ok || crun.SHA256 != hexSum([]byte("crun 1.8.1")) {
		t.Errorf("file artifact %+v", crun)
	}
}

func TestParseChecksum(t *testing.T) {
	h := hexSum([]byte("x"))
	tests := []struct {
		body, format, name, want string
		ok                       bool
	}{
		{h + "\n", "hex", "", h, true},
		{h + "  crictl.tar.gz\n", "hex", "", h, true},
		{"nope", "hex", "", "", false},
		{h + "  runc.amd64\n", "sha256sum", "runc.amd64", h, true},
		{h + " *runc.amd64\n", "sha256sum", "runc.amd64", h, true},
		{h + "  ./bin/runc.amd64\n", "sha256sum", "runc.amd64", h, true},
		{h + "  runc.arm64\n", "sha256sum", "runc.amd64", "", false},
	}
	for _, tt := range tests {
		got, err := ParseChecksum([]byte(tt.body), tt.format, tt.name)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseChecksum(%q, %s, %s) = %q, %v", tt.body, tt.format, tt.name, got, err)
		}
	}
}

func TestUpstreamVersion(t *testing.T) {
	for in, want := range map[string]string{"1:2.1.6+ds1-1": "2.1.6", "1.21-1": "1.21", "1.1.1+ds1-3+b17": "1.1.1", "2.1.6": "2.1.6"} {
		if got := UpstreamVersion(in); got != want {
			t.Errorf("UpstreamVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestLockPackageAgainstTheImage: a package source is checked against the
// locked image's package list.
func TestLockPackageAgainstTheImage(t *testing.T) {
	r := newResolver(t, catalog.Default())
	reg := filepath.Join(r.Images.Cache.Dir, "images")
	_ = os.MkdirAll(reg, 0o755)
	_ = os.WriteFile(filepath.Join(reg, "local.json"), []byte(`{"debian-12": {"name": "debian-12", "disk": "sha256:`+strings.Repeat("a", 64)+`", "format": "raw", "packages": {"conmon": "2.1.6+ds1-1"}}}`), 0o644)
	f, err := r.Lock(context.Background(), loadProfile(t, "gomod", "  conmon: {version: \"2.1.6\", source: package}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a, ok := f.Artifact("conmon@2.1.6/package"); !ok || a.Package != "conmon" || f.Image.Kind != lock.ImageLocal {
		t.Errorf("package artifact %+v, image %+v", a, f.Image)
	}
	_, err = r.Lock(context.Background(), loadProfile(t, "gomod", "  conmon: {version: \"2.1.7\", source: package}\n"))
	if !fault.Is(err, fault.Input) || !strings.Contains(err.Error(), "ships conmon 2.1.6+ds1-1, not 2.1.7") {
		t.Errorf("wrong package version: %v", err)
	}
}

// DownloadModule runs in a private directory with GOWORK=off, and refuses
// an answer for another module or version (a go.work or replace directive
// somewhere around could otherwise swap the code).
func TestDownloadModuleChecksTheAnswer(t *testing.T) {
	bin := t.TempDir()
	script := `#!/bin/sh
[ "$GOWORK" = off ] || { echo "GOWORK=$GOWORK" >&2; exit 9; }
case "$PWD" in */envctl-gomod-*) ;; *) echo "ran in $PWD" >&2; exit 9;; esac
echo '{"Path": "example.com/m", "Version": "v1.0.1", "Dir": "/x", "Sum": "h1:x"}'
`
	if err := os.WriteFile(filepath.Join(bin, "go"), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	t.Setenv("PATH", bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	t.Setenv("GOWORK", "/somewhere/go.work")
	if _, err := DownloadModule(context.Background(), "example.com/m", "v1.0.1"); err != nil {
		t.Errorf("a matching answer: %v", err)
	}
	_, err := DownloadModule(context.Background(), "example.com/m", "v1.0.0")
	if err == nil || !strings.Contains(err.Error(), "answered for example.com/m@v1.0.1") {
		t.Errorf("a mismatched answer: %v", err)
	}
}

// moduleProxy serves module .info and .mod files in the module proxy's
// layout (https://go.dev/ref/mod#goproxy-protocol).
func moduleProxy(t *testing.T, infos map[string]string) {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path := strings.TrimPrefix(r.URL.Path, "/")
		mod, rest, ok := strings.Cut(path, "/@v/")
		if !ok {
			http.NotFound(w, r)
			return
		}
		ver := strings.TrimSuffix(strings.TrimSuffix(rest, ".info"), ".mod")
		info, known := infos[mod+"@"+ver]
		switch {
		case !known:
			http.NotFound(w, r)
		case strings.HasSuffix(rest, ".info"):
			_, _ = w.Write([]byte(info))
		case strings.HasSuffix(rest, ".mod"):
			fmt.Fprintf(w, "module %s\n\ngo 1.24\n", mod)
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	t.Setenv("GOPROXY", srv.URL)
	t.Setenv("GOSUMDB", "off")
	t.Setenv("GONOSUMDB", "")
	t.Setenv("GOPRIVATE", "")
	t.Setenv("GOMODCACHE", t.TempDir())
}

// The lock compares a gomod version's module commit, from the proxy's
// .info (read by the real go command from a proxy in the real layout),
// with upstream's release commit in the catalog.
func TestProvenance(t *testing.T) {
	const snapshot = "5dd0877c91adb0d2b253f8009d12bb6531ca0104"
	const release = "d91a449706dbbd6c285e4d365bbd3b65fd8de43c"
	info := func(hash, when string) string {
		return `{"Version":"v1.34.0","Time":"` + when + `","Origin":{"VCS":"git","URL":"https://github.com/cri-o/cri-o","Hash":"` + hash + `","Ref":"refs/tags/v1.34.0"}}`
	}
	tests := []struct {
		name   string
		info   string
		commit string // pinned in the profile
		allow  bool
		err    []string
		origin string // the lock's release_commit, when recorded
	}{
		{"release commit", info(release, "2025-09-10T14:43:52Z"), "", false, nil, ""},
		{"moved tag refused", info(snapshot, "2025-05-14T19:57:38Z"), "", false,
			[]string{"cri-o 1.34.0 from gomod is not the release", "commit " + snapshot + " (2025-05-14)", "commit " + release + " (2025-09-10)", "commit: 5dd0877c", "--allow-moved-tags"}, ""},
		{"moved tag allowed", info(snapshot, "2025-05-14T19:57:38Z"), "", true, nil, release},
		{"moved tag pinned in the profile", info(snapshot, "2025-05-14T19:57:38Z"), "5dd0877c", false, nil, release},
		{"pinned commit differs", info(release, "2025-09-10T14:43:52Z"), "5dd0877c", false,
			[]string{"components.cri-o.commit", "serves github.com/cri-o/cri-o@v1.34.0 from commit " + release, "not the pinned 5dd0877c"}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			infos := map[string]string{"github.com/cri-o/cri-o@v1.34.0": tt.info}
			// cri-tools and runc are their releases.
			for _, m := range []struct{ comp, module, version string }{{"cri-tools", "sigs.k8s.io/cri-tools", "1.34.0"}, {"runc", "github.com/opencontainers/runc", "1.3.6"}} {
				c, _ := catalog.Default().Get(m.comp)
				rel, _ := c.Upstream(m.version)
				infos[m.module+"@v"+m.version] = `{"Version":"v` + m.version + `","Time":"` + rel.Time.Format(time.RFC3339) + `","Origin":{"VCS":"git","Hash":"` + rel.Commit + `"}}`
			}
			moduleProxy(t, infos)
			r := newResolver(t, catalog.Default())
			r.ModuleInfo, r.AllowMovedTags = ModuleInfo, tt.allow
			extra := ""
			if tt.commit != "" {
				extra = "commit: " + tt.commit
			}
			p := loadProfile(t, "gomod", "")
			if extra != "" {
				src := strings.Replace(string(mustRead(t, p.Path)), `cri-o:     {version: "1.34.0"}`, `cri-o:     {version: "1.34.0", `+extra+`}`, 1)
				var err error
				if p, err = profiles.Parse(p.Path, []byte(src), nil); err != nil {
					t.Fatal(err)
				}
			}
			f, err := r.Lock(context.Background(), p)
			if len(tt.err) > 0 {
				if err == nil || !fault.Is(err, fault.Input) {
					t.Fatalf("err %v, want an input error", err)
				}
				for _, w := range tt.err {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a, _ := f.Artifact("cri-o@1.34.0/gomod")
			if a.Origin == nil || a.Origin.URL != "https://github.com/cri-o/cri-o" || a.Origin.Ref != "refs/tags/v1.34.0" || a.Origin.Time.IsZero() || a.Origin.Release != tt.origin {
				t.Errorf("origin %+v, want release commit %q", a.Origin, tt.origin)
			}
			if tt.origin != "" && a.Label() != "1.34.0 (module snapshot 5dd0877c, 2025-05-14; release is d91a4497)" {
				t.Errorf("label %q", a.Label())
			}
		})
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A release artifact whose digest upstream published (the catalog records
// it) is locked without the network.
func TestLockReleaseFromKnownDigests(t *testing.T) {
	r := newResolver(t, catalog.Default())
	r.KnownDigests = true
	r.HTTP = &http.Client{Transport: roundTripFunc(func(req *http.Request) (*http.Response, error) {
		return nil, fmt.Errorf("no network: %s", req.URL)
	})}
	p := loadProfile(t, "release", "")
	f, err := r.Lock(context.Background(), p) // cri-o, cri-tools and runc all have published digests
	if err != nil {
		t.Fatal(err)
	}
	crio, _ := catalog.Default().Get("cri-o")
	facts, _ := crio.Upstream("1.34.0")
	a, _ := f.Artifact("cri-o@1.34.0/release")
	if a.SHA256 != facts.SHA256["amd64"] || a.SHA256 == "" {
		t.Errorf("cri-o 1.34.0 release: %s, want the published %s", a.SHA256, facts.SHA256["amd64"])
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// The lock pins the upstream suite's tools: bats from the catalog by
// digest, and CRI-O's test tree by go.sum hash — for a gomod CRI-O the
// module its binary is built from, for a release CRI-O the module of the
// same version. A tree that cannot be pinned fails only a profile that
// runs the upstream suite.
func TestLockPinsTheUpstreamSuiteTools(t *testing.T) {
	r := newResolver(t, catalog.Default())
	f, err := r.Lock(context.Background(), loadProfile(t, "gomod", ""))
	if err != nil {
		t.Fatal(err)
	}
	tools := map[string]lock.Artifact{}
	for _, a := range f.Tools {
		tools[a.Component] = a
	}
	crio, _ := f.Artifact("cri-o@1.34.0/gomod")
	if b := tools[lock.ToolBats]; b.Version != "1.11.1-1" || len(b.SHA256) != 64 || !strings.HasSuffix(b.URL, "bats_1.11.1-1_all.deb") {
		t.Errorf("bats %+v", b)
	}
	if tr := tools[lock.ToolCRIOTests]; tr.ModuleSum != crio.ModuleSum || tr.Module != lock.CRIOModule || tr.Recipe != "crio-tests" || tr.Version != "1.34.0" {
		t.Errorf("CRI-O test tree %+v, binary's module %+v", tr, crio)
	}

	srv := httptest.NewServer(newUpstream())
	defer srv.Close()
	r = newResolver(t, testCatalog(t, srv.URL))
	var asked []string
	r.ModuleSum = func(_ context.Context, m, v string) (string, error) {
		asked = append(asked, m+"@"+v)
		return "h1:tree", nil
	}
	f, err = r.Lock(context.Background(), loadProfile(t, "release", ""))
	if err != nil {
		t.Fatal(err)
	}
	if len(f.Tools) == 0 || f.Tools[len(f.Tools)-1].ModuleSum != "h1:tree" || strings.Join(asked, " ") != "github.com/cri-o/cri-o@v1.34.0" {
		t.Errorf("release CRI-O's test tree: %+v (asked %v)", f.Tools, asked)
	}

	r.ModuleSum = func(context.Context, string, string) (string, error) { return "", errors.New("proxy unreachable") }
	if f, err = r.Lock(context.Background(), loadProfile(t, "release", "")); err != nil {
		t.Errorf("own suite only: %v", err)
	} else {
		for _, tool := range f.Tools {
			if tool.Component == lock.ToolCRIOTests {
				t.Errorf("an unpinned tree in the lock: %+v", tool)
			}
		}
	}
	p := loadProfile(t, "release", "")
	p.Test = profiles.TestUpstream
	if _, err := r.Lock(context.Background(), p); err == nil || !strings.Contains(err.Error(), "needs CRI-O's test tree github.com/cri-o/cri-o@v1.34.0") || fault.ClassOf(err) != fault.Infra {
		t.Errorf("upstream suite without a tree: %v", err)
	}
}

// Each commit comes from one documented order of sources: the module
// proxy's record of the version, then the catalog's release commit; the
// profile's pin must agree with it. What this machine's module cache holds
// (an old .info with another origin) changes nothing: the proxy is asked
// over HTTP.
func TestCommitSources(t *testing.T) {
	const crictlRelease = "ca0237b9fec5b675b0bb7bc96b7496e6d54f5ccb"
	const other = "1111111111111111111111111111111111111111"
	withOrigin := func(hash string) string {
		return `{"Version":"v1.34.0","Time":"2025-08-21T07:41:07Z","Origin":{"VCS":"git","URL":"https://github.com/kubernetes-sigs/cri-tools","Hash":"` + hash + `","Ref":"refs/tags/v1.34.0"}}`
	}
	const noOrigin = `{"Version": "v1.34.0", "Time": "2025-08-21T07:41:07Z"}`
	tests := []struct {
		name       string
		info       string // the proxy's .info of cri-tools v1.34.0
		cached     string // an older .info in this machine's module cache
		pin        string // the profile's commit: for cri-tools
		wantCommit string
		wantSource lock.CommitSource
		wantErr    []string
	}{
		{"the proxy records the release commit", withOrigin(crictlRelease), "", "", crictlRelease, lock.CommitFromModuleProxy, nil},
		{"no origin on the proxy: the catalog's release commit", noOrigin, "", "", crictlRelease, lock.CommitFromCatalog, nil},
		{"the module cache's old .info is not read", noOrigin, withOrigin(other), "", crictlRelease, lock.CommitFromCatalog, nil},
		{"a pin the catalog confirms", noOrigin, "", "ca0237b9", crictlRelease, lock.CommitFromCatalog, nil},
		{"a pin the catalog contradicts", noOrigin, "", "11111111", "", "",
			[]string{"components.cri-tools.commit", "records no commit for sigs.k8s.io/cri-tools@v1.34.0", "release v1.34.0 is commit " + crictlRelease, "not the pinned 11111111"}},
		{"a pin the proxy contradicts", withOrigin(crictlRelease), "", "11111111", "", "",
			[]string{"components.cri-tools.commit", "from commit " + crictlRelease, "not the pinned 11111111"}},
		{"the proxy and the catalog disagree: a moved tag", withOrigin(other), "", "", "", "",
			[]string{"cri-tools 1.34.0 from gomod is not the release", other, crictlRelease}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			infos := map[string]string{"sigs.k8s.io/cri-tools@v1.34.0": tt.info}
			for _, m := range []struct{ comp, module, version string }{{"cri-o", "github.com/cri-o/cri-o", "1.34.0"}, {"runc", "github.com/opencontainers/runc", "1.3.6"}} {
				c, _ := catalog.Default().Get(m.comp)
				rel, _ := c.Upstream(m.version)
				infos[m.module+"@v"+m.version] = `{"Version":"v` + m.version + `","Time":"` + rel.Time.Format(time.RFC3339) + `","Origin":{"VCS":"git","Hash":"` + rel.Commit + `"}}`
			}
			moduleProxy(t, infos)
			if tt.cached != "" {
				dir := filepath.Join(os.Getenv("GOMODCACHE"), "cache", "download", "sigs.k8s.io", "cri-tools", "@v")
				if err := os.MkdirAll(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(dir, "v1.34.0.info"), []byte(tt.cached), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			r := newResolver(t, catalog.Default())
			r.ModuleInfo = ModuleInfo
			p := loadProfile(t, "gomod", "")
			if tt.pin != "" {
				src := strings.Replace(string(mustRead(t, p.Path)), `cri-tools: {version: "~> 1.34.0"}`, `cri-tools: {version: "1.34.0", commit: `+tt.pin+`}`, 1)
				var err error
				if p, err = profiles.Parse(p.Path, []byte(src), nil); err != nil {
					t.Fatal(err)
				}
			}
			r.AllowMovedTags = true // cri-o's own moved tag is not this test's business
			if strings.Contains(tt.name, "moved tag") {
				r.AllowMovedTags = false
			}
			f, err := r.Lock(context.Background(), p)
			if len(tt.wantErr) > 0 {
				if err == nil || !fault.Is(err, fault.Input) {
					t.Fatalf("err %v, want an input error", err)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%q lacks %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			a, _ := f.Artifact("cri-tools@1.34.0/gomod")
			if a.Origin == nil || a.Origin.Commit != tt.wantCommit || a.Origin.Source != tt.wantSource {
				t.Fatalf("origin %+v, want commit %s from %s", a.Origin, tt.wantCommit, tt.wantSource)
			}
			if a.Origin.URL != "https://github.com/kubernetes-sigs/cri-tools" || a.Origin.Ref != "refs/tags/v1.34.0" || !a.Origin.Time.Equal(time.Date(2025, 8, 21, 7, 41, 7, 0, time.UTC)) {
				t.Errorf("origin %+v: url, ref or time", a.Origin)
			}
		})
	}
}
