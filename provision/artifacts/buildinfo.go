package artifacts

import (
	"debug/buildinfo"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/go-version"
)

// CRIAPIVersion reads which k8s.io/cri-api a Go binary was compiled against
// (its module version, or the replacement's). It returns "" for binaries
// that do not use the CRI API, and an error for files that are not Go
// binaries.
func CRIAPIVersion(path string) (string, error) { return DepVersion(path, "k8s.io/cri-api") }

// RuntimeSpecVersion reads which OCI runtime-spec a Go binary (crio, runc)
// was built with; CRI-O writes that version into every container's config.
func RuntimeSpecVersion(path string) (string, error) {
	return DepVersion(path, "github.com/opencontainers/runtime-spec")
}

// DepVersion reads the version of one module a Go binary was built with
// (the replacement's, when replaced).
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

// kubernetesReleases maps Kubernetes minor releases to their dates; a
// pseudo-version of the kubernetes staging tree is dated, so its date tells
// which cri-api minor it carries (approximately: master between releases
// carries the earlier release's API plus changes under way).
var kubernetesReleases = []struct {
	minor int
	date  string
}{
	{26, "2022-12-08"}, {27, "2023-04-11"}, {28, "2023-08-15"}, {29, "2023-12-13"},
	{30, "2024-04-17"}, {31, "2024-08-13"}, {32, "2024-12-11"}, {33, "2025-04-23"},
	{34, "2025-08-27"}, {35, "2025-12-17"}, {36, "2026-04-22"}, {37, "2026-08-26"},
}

var pseudoRE = regexp.MustCompile(`-(\d{14})-[0-9a-f]{12}`)

// CRIAPIMinor turns a cri-api version string from CRIAPIVersion into its
// minor number (v0.34.0-rc.2 → 34) and whether that is approximate.
func CRIAPIMinor(v string) (minor int, approx bool, err error) {
	v = strings.Fields(v + " ")[0]
	if m := pseudoRE.FindStringSubmatch(v); m != nil {
		t, err := time.Parse("20060102150405", m[1])
		if err != nil {
			return 0, false, err
		}
		minor = 0
		for _, r := range kubernetesReleases {
			d, _ := time.Parse("2006-01-02", r.date)
			if !t.Before(d) {
				minor = r.minor
			}
		}
		if minor == 0 {
			return 0, false, fmt.Errorf("pseudo-version %s predates the known releases", v)
		}
		return minor, true, nil
	}
	sv, err := version.NewVersion(v)
	if err != nil {
		return 0, false, fmt.Errorf("cri-api version %q: %w", v, err)
	}
	seg := sv.Segments()
	if len(seg) < 2 || seg[0] != 0 {
		return 0, false, fmt.Errorf("cri-api version %q is not v0.MINOR", v)
	}
	return seg[1], false, nil
}
