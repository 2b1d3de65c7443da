package compat

import (
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/hashicorp/go-version"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/catalog"
)

// Finding is a predicted or diagnosed incompatibility.
type Finding struct {
	Component string `json:"component"`
	Version   string `json:"version"`
	Cause     string `json:"cause"`
	Fix       string `json:"fix"`
	// Symptom is the raw error this incompatibility produces.
	Symptom string `json:"symptom,omitempty"`
	// Skips marks an upstream version gate: the tests are skipped, not failed.
	Skips bool `json:"skips,omitempty"`
}

func (f Finding) String() string {
	if f.Fix != "" {
		return f.Cause + ": " + f.Fix
	}
	return f.Cause
}

// Build is what a component's binaries say about how they were built,
// read from their Go build info.
type Build struct {
	Component string `json:"component"`
	Version   string `json:"version"`
	Binary    string `json:"binary"`
	// CRIAPI is the k8s.io/cri-api module version compiled in ("" if none).
	CRIAPI string `json:"cri_api,omitempty"`
	// RuntimeSpec is the OCI runtime-spec module version compiled in.
	RuntimeSpec string `json:"runtime_spec,omitempty"`
}

// rule is one row of the known-incompatibility table, keyed by version.
type rule struct {
	component  string
	constraint string
	// gate, when set, limits the rule to one upstream bats file: a version
	// gate in upstream's helpers that skips its tests. Other rules are
	// about the stack and hold for every image-volume test: envctl's own
	// and upstream's oci_volumes.bats.
	gate    string
	cause   func(ver string) string
	fix     string
	symptom string
}

var table = []rule{
	{
		// crun commits 4532a388 and 0860c0ff (crun 1.14.2/1.14.3) dropped a
		// check that refused any ociVersion not containing "1.0".
		component: "crun", constraint: "< 1.14.3",
		cause: func(v string) string {
			return fmt.Sprintf("crun v%s accepts only OCI runtime spec 1.0.x (crun dropped that check in 1.14.3), but CRI-O writes a newer ociVersion, so every container create fails with `unknown version specified`", v)
		},
		fix:     "use crun ≥ 1.14.3, or runc",
		symptom: "unknown version specified",
	},
	{
		component: "cri-tools", constraint: "< 1.31",
		cause: func(v string) string {
			return fmt.Sprintf("crictl v%s does not send CRI Mount.image (image volumes need cri-tools ≥ 1.31)", v)
		},
		fix:     "upgrade cri-tools or pin a matching pair",
		symptom: "mount.HostPath is empty",
	},
	{
		component: "cri-o", constraint: "< 1.31",
		cause: func(v string) string {
			return fmt.Sprintf("CRI-O v%s has no OCI image volume support (added in 1.31)", v)
		},
		fix:     "use CRI-O ≥ 1.31",
		symptom: "mount.HostPath is empty",
	},
	{
		// oci_volumes.bats: setup() { requires_crictl "1.31"; … }. bats then
		// reports every test as skipped and exits 0.
		component: "cri-tools", constraint: "< 1.31", gate: profiles.UpstreamDefaultFile,
		cause: func(v string) string {
			return fmt.Sprintf("upstream's oci_volumes.bats skips every test with crictl v%s: its setup() calls requires_crictl \"1.31\"", v)
		},
		fix:     "use cri-tools ≥ 1.31 to run upstream's tests",
		symptom: "requires crictl version",
	},
}

// imageVolume reports whether a test exercises image volumes: envctl's
// own test, or upstream's oci_volumes.bats.
func imageVolume(test profiles.TestName) bool {
	file, upstream := test.UpstreamFile()
	return test.Own() || upstream && file == profiles.UpstreamDefaultFile
}

func (r rule) applies(test profiles.TestName) bool {
	if r.gate != "" {
		file, upstream := test.UpstreamFile()
		return upstream && file == r.gate
	}
	return imageVolume(test)
}

// Predict lists the known incompatibilities of a cell for a test: from the
// versions (catalog name → version), and from what the binaries' build
// info says, which also covers file:// binaries whose label says little.
func Predict(test profiles.TestName, versions map[string]string, builds []Build) []Finding {
	var out []Finding
	add := func(f Finding) {
		for _, x := range out {
			if x.Cause == f.Cause {
				return
			}
		}
		out = append(out, f)
	}
	for _, r := range table {
		if !r.applies(test) {
			continue
		}
		ver, ok := versions[r.component]
		if !ok {
			continue
		}
		v, err := version.NewVersion(ver)
		if err != nil {
			continue
		}
		c, _ := version.NewConstraint(r.constraint)
		if c.Check(v) {
			add(Finding{Component: r.component, Version: ver, Cause: r.cause(ver), Fix: r.fix, Symptom: r.symptom, Skips: r.gate != ""})
		}
	}
	if imageVolume(test) {
		for _, f := range fromBuilds(versions, builds) {
			add(f)
		}
	}
	return out
}

// fromBuilds predicts failures from the cri-api and runtime-spec versions
// compiled into crictl and crio.
func fromBuilds(versions map[string]string, builds []Build) []Finding {
	var out []Finding
	for _, b := range builds {
		if b.Binary == "crio" && b.RuntimeSpec != "" && !strings.HasPrefix(b.RuntimeSpec, "v1.0.") {
			if crun, ok := versions["crun"]; ok && catalog.Compare(crun, "1.14.3") < 0 {
				out = append(out, Finding{Component: "crun", Version: crun,
					Cause:   fmt.Sprintf("crio %s was built with OCI runtime-spec %s and writes that ociVersion; crun %s accepts only 1.0.x (fixed in crun 1.14.3), so every container create fails with `unknown version specified`", b.Version, b.RuntimeSpec, crun),
					Fix:     "use crun ≥ 1.14.3, or runc",
					Symptom: "unknown version specified"})
			}
		}
		if b.CRIAPI == "" || (b.Binary != "crictl" && b.Binary != "crio") {
			continue
		}
		minor, approx, err := CRIAPIMinor(b.CRIAPI)
		if err != nil {
			continue
		}
		about := fmt.Sprintf("v0.%d", minor)
		if approx {
			about = "≈ " + about
		}
		raw := strings.Fields(b.CRIAPI)[0]
		switch {
		case minor < 31 && b.Binary == "crictl":
			out = append(out, Finding{Component: b.Component, Version: b.Version,
				Cause:   fmt.Sprintf("crictl %s was built with cri-api %s (%s), which lacks Mount.image; CRI-O expects it. The image-volume test will fail with `mount.HostPath is empty`", b.Version, about, raw),
				Fix:     "use cri-tools ≥ 1.31",
				Symptom: "mount.HostPath is empty"})
		case minor < 31:
			out = append(out, Finding{Component: b.Component, Version: b.Version,
				Cause:   fmt.Sprintf("crio %s was built with cri-api %s, which lacks Mount.image: it has no image volume support", b.Version, about),
				Fix:     "use CRI-O ≥ 1.31",
				Symptom: "mount.HostPath is empty"})
		case minor < 33:
			out = append(out, Finding{Component: b.Component, Version: b.Version,
				Cause: fmt.Sprintf("%s %s was built with cri-api %s, which lacks Mount.image_sub_path; the sub-path case will fail", b.Binary, b.Version, about),
				Fix:   "use cri-tools and CRI-O ≥ 1.33 for sub paths"})
		}
	}
	return out
}

// Diagnose explains a failed test from its raw output: the predicted
// findings whose symptom the output shows.
func Diagnose(output string, predicted []Finding) []Finding {
	var out []Finding
	for _, f := range predicted {
		if f.Symptom != "" && strings.Contains(output, f.Symptom) {
			out = append(out, f)
		}
	}
	return out
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

// CRIAPIMinor turns a cri-api module version into its minor number
// (v0.34.0-rc.2 → 34) and whether that is approximate (a pseudo-version).
func CRIAPIMinor(v string) (minor int, approx bool, err error) {
	v = strings.Fields(v + " ")[0]
	if m := pseudoRE.FindStringSubmatch(v); m != nil {
		t, err := time.Parse("20060102150405", m[1])
		if err != nil {
			return 0, false, err
		}
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
