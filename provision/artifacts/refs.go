package artifacts

import (
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/lock"
)

// Refs are the cache entries locks reference, by kind and name.
type Refs map[cache.EntryKind]map[string]bool

// Has reports whether an entry is referenced.
func (r Refs) Has(e cache.Entry) bool { return r[e.Kind][e.Name] }

func (r Refs) add(kind cache.EntryKind, name string) {
	if name == "" {
		return
	}
	if r[kind] == nil {
		r[kind] = map[string]bool{}
	}
	r[kind][name] = true
}

// Referenced lists what the locks need from the cache: the image's blobs,
// every release artifact's blob and its unpacked tree, and every Go
// build.
func Referenced(locks ...*lock.File) Refs {
	r := Refs{}
	for _, f := range locks {
		for _, d := range []string{f.Image.Digest, f.Image.Kernel, f.Image.Initrd} {
			r.add(cache.EntryBlob, d)
		}
		for _, a := range f.Artifacts {
			switch a.Source.Kind() {
			case profiles.KindRelease, profiles.KindMirror:
				r.add(cache.EntryBlob, "sha256:"+a.SHA256)
				r.add(cache.EntryUnpacked, a.SHA256)
			case profiles.KindGoMod:
				r.add(cache.EntryBuild, BuildKey(a))
			}
		}
	}
	return r
}
