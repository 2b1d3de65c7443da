package artifacts

import (
	"debug/buildinfo"
	"maps"
	"slices"
	"strings"

	"github.com/envctl/envctl/profiles/compat"
	"github.com/envctl/envctl/profiles/lock"
)

// DepVersion reads the version of one module a Go binary was built with
// (the replacement's, when replaced). It returns "" for a binary that does
// not use the module, and an error for a file that is not a Go binary.
func DepVersion(path, module string) (string, error) {
	bi, err := buildinfo.ReadFile(path)
	if err != nil {
		return "", err
	}
	for _, d := range bi.Deps {
		if d.Path != module {
			continue
		}
		if d.Replace != nil {
			return d.Replace.Version + " (replaced: " + d.Replace.Path + ")", nil
		}
		return d.Version, nil
	}
	return "", nil
}

// Builds reads what a component's Go binaries say about how they were
// built: the cri-api and OCI runtime-spec versions compiled in.
func Builds(c lock.Part, fl Files) []compat.Build {
	var out []compat.Build
	for _, name := range slices.Sorted(maps.Keys(fl.Binaries)) {
		path := fl.Binaries[name]
		cri, err := DepVersion(path, "k8s.io/cri-api")
		if err != nil {
			continue
		}
		spec, _ := DepVersion(path, "github.com/opencontainers/runtime-spec")
		if cri == "" && spec == "" {
			continue
		}
		out = append(out, compat.Build{Component: c.Component, Version: c.Version, Binary: name, CRIAPI: cri, RuntimeSpec: spec})
	}
	return out
}

// CRIAPI returns the short cri-api version of the first binary that has
// one ("" if none).
func CRIAPI(builds []compat.Build) string {
	for _, b := range builds {
		if b.CRIAPI != "" {
			return strings.Fields(b.CRIAPI)[0]
		}
	}
	return ""
}
