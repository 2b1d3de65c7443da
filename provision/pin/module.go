package pin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

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

// ModuleInfo asks the module proxy about module@version (its .info, via
// `go list -m -json`), from a private temporary directory.
func ModuleInfo(ctx context.Context, module, version string) (Info, error) {
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
