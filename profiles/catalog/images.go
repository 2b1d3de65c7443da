package catalog

import (
	"bytes"
	_ "embed"
	"fmt"
	"maps"
	"slices"
	"sync"

	"go.yaml.in/yaml/v3"
)

//go:embed images.yaml
var embeddedImages []byte

// Image is a downloadable, checksum-pinned cloud image.
type Image struct {
	Name        string `yaml:"-" json:"name"`
	Description string `yaml:"description" json:"description"`
	Arch        string `yaml:"arch" json:"arch"`
	URL         string `yaml:"url" json:"url"`
	Digest      string `yaml:"digest" json:"digest"`
	Format      string `yaml:"format" json:"format"`
	Build       string `yaml:"build,omitempty" json:"build,omitempty"`
}

// ImageRecipe builds an image locally: a script in scripts/ and its arguments.
type ImageRecipe struct {
	Script string   `yaml:"script"`
	Args   []string `yaml:"args"`
}

// ImageCatalog is the embedded image catalog.
type ImageCatalog struct {
	Images map[string]*Image       `yaml:"images"`
	Builds map[string]*ImageRecipe `yaml:"builds"`
}

// Images returns the embedded image catalog, parsed once.
var Images = sync.OnceValue(func() *ImageCatalog {
	c, err := ParseImages(embeddedImages)
	if err != nil {
		panic(fmt.Sprintf("embedded image catalog: %v", err))
	}
	return c
})

// ParseImages reads an image catalog, refusing unknown fields.
func ParseImages(data []byte) (*ImageCatalog, error) {
	var c ImageCatalog
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("image catalog: %w", err)
	}
	for n, im := range c.Images {
		im.Name = n
	}
	return &c, nil
}

// Names lists every image name, downloadable or buildable.
func (c *ImageCatalog) Names() []string {
	names := slices.Collect(maps.Keys(c.Images))
	for n := range c.Builds {
		if _, ok := c.Images[n]; !ok {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}
