package catalog

import (
	"bytes"
	_ "embed"
	"fmt"
	"strings"
	"sync"
	"time"

	"go.yaml.in/yaml/v3"
)

//go:embed provenance.yaml
var provenanceYAML []byte

// ReleaseFacts are what upstream published for one version: the commit its
// release tag points at, that commit's time, and the release artifact's
// sha256 by architecture, where it is publicly recorded.
type ReleaseFacts struct {
	Commit string            `yaml:"commit"`
	Time   time.Time         `yaml:"time"`
	SHA256 map[string]string `yaml:"sha256,omitempty"`
}

// Provenance is a component's known releases.
type Provenance struct {
	Repository string                  `yaml:"repository"`
	Releases   map[string]ReleaseFacts `yaml:"releases"`
}

// Provenances returns the embedded provenance table by component, parsed once.
var Provenances = sync.OnceValue(func() map[string]Provenance {
	var p map[string]Provenance
	dec := yaml.NewDecoder(bytes.NewReader(provenanceYAML))
	dec.KnownFields(true)
	if err := dec.Decode(&p); err != nil {
		panic(fmt.Sprintf("embedded provenance table: %v", err))
	}
	return p
})

// Upstream returns upstream's facts about one version of a component.
func (c *Component) Upstream(version string) (ReleaseFacts, bool) {
	r, ok := Provenances()[c.Name].Releases[strings.TrimPrefix(version, "v")]
	return r, ok
}

// Repository is the component's upstream source repository, as the
// provenance table records it ("" when unknown).
func (c *Component) Repository() string { return Provenances()[c.Name].Repository }

// SourceStatus says how a module's commit relates to upstream's release.
type SourceStatus string

// The statuses.
const (
	// StatusRelease: the commit is the release tag's.
	StatusRelease SourceStatus = "release commit"
	// StatusMovedTag: the module proxy serves another commit under the
	// version's tag (the tag moved after the proxy cached it).
	StatusMovedTag SourceStatus = "moved tag"
	// StatusUnknown: envctl knows no release commit for the version.
	StatusUnknown SourceStatus = "unknown"
)

// Status compares a module's origin commit with upstream's release commit.
func (c *Component) Status(version, commit string) SourceStatus {
	r, ok := c.Upstream(version)
	switch {
	case !ok || commit == "":
		return StatusUnknown
	case strings.HasPrefix(r.Commit, commit) || strings.HasPrefix(commit, r.Commit):
		return StatusRelease
	}
	return StatusMovedTag
}
