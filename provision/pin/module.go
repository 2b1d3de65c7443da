package pin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	modfetch "golang.org/x/mod/module"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/catalog"
)

// Origin is where a module version's code came from, as the module proxy's
// .info reports it.
type Origin struct {
	VCS  string `json:"VCS,omitempty" yaml:"vcs,omitempty"`
	URL  string `json:"URL,omitempty" yaml:"url,omitempty"`
	Ref  string `json:"Ref,omitempty" yaml:"ref,omitempty"`
	Hash string `json:"Hash,omitempty" yaml:"commit,omitempty"`
}

// Info is a module version as the proxy describes it.
type Info struct {
	Path    string    `json:"Path"`
	Version string    `json:"Version"`
	Time    time.Time `json:"Time"`
	Origin  *Origin   `json:"Origin"`
	Error   *struct {
		Err string `json:"Err"`
	} `json:"Error"`
}

// ModuleInfo asks the module proxy about module@version: its .info (time
// and origin), read over HTTP from the first proxy of GOPROXY that knows
// the version (https://go.dev/ref/mod#goproxy-protocol), never from the
// local module cache, whose copy of a .info depends on what this machine
// downloaded before, and when. Only a GOPROXY that reaches no proxy
// ("direct") asks the go command, which then asks the repository itself.
func ModuleInfo(ctx context.Context, module, version string) (Info, error) {
	proxies, direct := goProxies()
	var errs []string
	for _, base := range proxies {
		info, err := proxyInfo(ctx, base, module, version)
		if err == nil {
			return info, nil
		}
		errs = append(errs, err.Error())
		if !errors.Is(err, errNotOnProxy) {
			return Info{}, fmt.Errorf("%s@%s: %s", module, version, strings.Join(errs, "; "))
		}
	}
	if direct {
		return goListModule(ctx, module, version)
	}
	if len(errs) == 0 {
		return Info{}, fmt.Errorf("%s@%s: GOPROXY names no module proxy (it is %q)", module, version, goEnv("GOPROXY"))
	}
	return Info{}, fmt.Errorf("%s@%s: %s", module, version, strings.Join(errs, "; "))
}

var errNotOnProxy = errors.New("not on this proxy")

// goProxies lists GOPROXY's proxy URLs in order, and whether "direct"
// follows them (module proxies answer 404 or 410 for a version they do
// not have, and the go command then tries the next entry).
func goProxies() (urls []string, direct bool) {
	for _, p := range strings.FieldsFunc(goEnv("GOPROXY"), func(r rune) bool { return r == ',' || r == '|' }) {
		switch p = strings.TrimSpace(p); p {
		case "direct":
			return urls, true
		case "off", "":
			return urls, false
		default:
			urls = append(urls, strings.TrimSuffix(p, "/"))
		}
	}
	return urls, false
}

// goEnv reads one go environment setting: the environment wins, then the
// go command's own configuration (go env -w).
func goEnv(key string) string {
	if v, ok := os.LookupEnv(key); ok {
		return v
	}
	out, err := exec.Command("go", "env", key).Output()
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(out))
}

// proxyHTTP is the client for module proxy requests; every request also
// ends with its context.
var proxyHTTP = &http.Client{Timeout: 60 * time.Second}

func proxyInfo(ctx context.Context, base, module, version string) (Info, error) {
	escMod, err := modfetch.EscapePath(module)
	if err != nil {
		return Info{}, fmt.Errorf("module path %q: %w", module, err)
	}
	escVer, err := modfetch.EscapeVersion(version)
	if err != nil {
		return Info{}, fmt.Errorf("version %q: %w", version, err)
	}
	url := base + "/" + escMod + "/@v/" + escVer + ".info"
	var body []byte
	switch {
	case strings.HasPrefix(url, "file://"):
		body, err = os.ReadFile(strings.TrimPrefix(url, "file://"))
		if errors.Is(err, fs.ErrNotExist) {
			return Info{}, fmt.Errorf("%s: %w", url, errNotOnProxy)
		}
	default:
		body, err = httpGet(ctx, url)
	}
	if err != nil {
		return Info{}, err
	}
	var info Info
	if err := json.Unmarshal(body, &info); err != nil {
		return Info{}, fmt.Errorf("%s: not a module .info (%v)", url, err)
	}
	if info.Version != version {
		return Info{}, fmt.Errorf("%s: the proxy answered for version %q", url, info.Version)
	}
	info.Path = module
	return info, nil
}

func httpGet(ctx context.Context, url string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := proxyHTTP.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	switch {
	case resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone:
		return nil, fmt.Errorf("%s: %s: %w", url, resp.Status, errNotOnProxy)
	case resp.StatusCode != http.StatusOK:
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return body, err
}

// goListModule asks the go command (`go list -m -json`), from a private
// temporary directory: what GOPROXY=direct means.
func goListModule(ctx context.Context, module, version string) (Info, error) {
	tmp, err := os.MkdirTemp("", "envctl-golist-")
	if err != nil {
		return Info{}, err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "go", "list", "-m", "-json", module+"@"+version)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod", "GOWORK=off", "GO111MODULE=on")
	out, err := cmd.Output()
	var info Info
	if jerr := json.Unmarshal(out, &info); jerr != nil && err == nil {
		err = jerr
	}
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return info, fmt.Errorf("%s@%s: %s", module, version, strings.TrimSpace(string(ee.Stderr)))
		}
		return info, fmt.Errorf("%s@%s: %w", module, version, err)
	}
	if info.Error != nil {
		return info, fmt.Errorf("%s@%s: %s", module, version, info.Error.Err)
	}
	if info.Path != module || info.Version != version {
		return info, fmt.Errorf("asked for %s@%s, the proxy answered for %s@%s", module, version, info.Path, info.Version)
	}
	return info, nil
}

// Available keeps the versions a source can actually provide: for gomod,
// the ones the module proxy serves (it may list fewer than it serves, so
// each version's .info is asked); for other sources, all of them.
func Available(ctx context.Context, comp *catalog.Component, source profiles.Source, versions []string) []string {
	if source.Kind() != profiles.KindGoMod || comp.GoMod == nil {
		return versions
	}
	ok := make([]bool, len(versions))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, v := range versions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			_, err := ModuleInfo(ctx, comp.GoMod.Module, "v"+v)
			ok[i] = err == nil
		}()
	}
	wg.Wait()
	var out []string
	for i, v := range versions {
		if ok[i] {
			out = append(out, v)
		}
	}
	return out
}

// VersionProvenance is one version of a component: upstream's release
// commit, the module proxy's commit for it (gomod components), and how the
// two relate.
type VersionProvenance struct {
	Version       string               `json:"version"`
	ReleaseCommit string               `json:"release_commit,omitempty"`
	ReleaseTime   time.Time            `json:"release_time,omitzero"`
	ModuleCommit  string               `json:"module_commit,omitempty"`
	ModuleTime    time.Time            `json:"module_time,omitzero"`
	Status        catalog.SourceStatus `json:"status"`
	// Published says the catalog records the release artifact's digest.
	Published bool   `json:"published_digest"`
	Note      string `json:"note,omitempty"`
}

// Provenance lists every version of a component with its provenance,
// asking the module proxy about each version of a gomod component.
func Provenance(ctx context.Context, comp *catalog.Component, arch string, info func(ctx context.Context, module, version string) (Info, error)) []VersionProvenance {
	versions := comp.Sorted()
	out := make([]VersionProvenance, len(versions))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	for i, v := range versions {
		vp := VersionProvenance{Version: v, Status: catalog.StatusUnknown}
		if rel, ok := comp.Upstream(v); ok {
			vp.ReleaseCommit, vp.ReleaseTime, vp.Published = rel.Commit, rel.Time, rel.SHA256[arch] != ""
		}
		out[i] = vp
		if comp.GoMod == nil {
			if vp.ReleaseCommit != "" {
				out[i].Status = catalog.StatusRelease
			}
			continue
		}
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			mi, err := info(ctx, comp.GoMod.Module, "v"+v)
			switch {
			case err != nil:
				out[i].Note = "the module proxy does not serve it"
			case mi.Origin != nil:
				out[i].ModuleCommit, out[i].ModuleTime = mi.Origin.Hash, mi.Time
				out[i].Status = comp.Status(v, mi.Origin.Hash)
			}
		})
	}
	wg.Wait()
	return out
}
