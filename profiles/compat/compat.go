package compat

import (
	"fmt"
	"strings"

	"github.com/hashicorp/go-version"
)

// Finding is a predicted or diagnosed incompatibility.
type Finding struct {
	Component string `json:"component"`
	Version   string `json:"version"`
	Cause     string `json:"cause"`
	Fix       string `json:"fix"`
	// Symptom is the raw error this incompatibility produces.
	Symptom string `json:"symptom,omitempty"`
}

func (f Finding) String() string {
	s := f.Cause
	if f.Fix != "" {
		s += ": " + f.Fix
	}
	return s
}

// rule is one row of the known-incompatibility table.
type rule struct {
	component  string
	constraint string
	needs      string // the test that breaks
	cause      func(ver string) string
	fix        string
	symptom    string
}

var table = []rule{
	{
		// crun commits 4532a388 and 0860c0ff (crun 1.14.2/1.14.3) dropped a
		// check that refused any ociVersion not containing "1.0".
		component: "crun", constraint: "< 1.14.3", needs: "image-volume-lifecycle",
		cause: func(v string) string {
			return fmt.Sprintf("crun v%s accepts only OCI runtime spec 1.0.x (crun dropped that check in 1.14.3), but CRI-O writes a newer ociVersion, so every container create fails with `unknown version specified`", v)
		},
		fix:     "use crun ≥ 1.14.3, or runc",
		symptom: "unknown version specified",
	},
	{
		component: "cri-tools", constraint: "< 1.31", needs: "image-volume-lifecycle",
		cause: func(v string) string {
			return fmt.Sprintf("crictl v%s does not send CRI Mount.image (image volumes need cri-tools ≥ 1.31)", v)
		},
		fix:     "upgrade cri-tools or pin a matching pair",
		symptom: "mount.HostPath is empty",
	},
	{
		component: "cri-o", constraint: "< 1.31", needs: "image-volume-lifecycle",
		cause: func(v string) string {
			return fmt.Sprintf("CRI-O v%s has no OCI image volume support (added in 1.31)", v)
		},
		fix:     "use CRI-O ≥ 1.31",
		symptom: "mount.HostPath is empty",
	},
}

// Predict lists the known incompatibilities of a set of component versions
// (catalog name → version) for a test.
func Predict(test string, versions map[string]string) []Finding {
	var out []Finding
	for _, r := range table {
		if r.needs != test {
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
			out = append(out, Finding{Component: r.component, Version: ver, Cause: r.cause(ver), Fix: r.fix, Symptom: r.symptom})
		}
	}
	return out
}

// Diagnose explains a raw error from a test step, given the versions that
// ran: it returns the findings whose symptom the output shows.
func Diagnose(output, test string, versions map[string]string) []Finding {
	var out []Finding
	for _, f := range Predict(test, versions) {
		if f.Symptom != "" && strings.Contains(output, f.Symptom) {
			out = append(out, f)
		}
	}
	return out
}
