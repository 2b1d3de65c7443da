package cache

import (
	"encoding/json"
	"errors"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"

	"github.com/opencontainers/go-digest"

	"github.com/envctl/envctl/profiles/base/atomicfile"
	"github.com/envctl/envctl/profiles/base/fault"
)

// ManifestName is the file in an unpacked or built directory that records
// the digest of every file in it.
const ManifestName = ".envctl-manifest.json"

// TreeFile is one file of a sealed directory.
type TreeFile struct {
	Digest digest.Digest `json:"digest,omitempty"`
	Stamp  Stamp         `json:"stamp"`
	// Link is a symbolic link's target (an unpacked archive may hold
	// links inside it); Digest is then empty.
	Link string `json:"link,omitempty"`
}

// Manifest maps each regular file of a sealed directory (slash-separated,
// relative) to its digest.
type Manifest map[string]TreeFile

// Digest returns a file's recorded digest by its path (absolute, or
// relative to the directory).
func (m Manifest) Digest(dir, path string) (digest.Digest, bool) {
	if rel, err := filepath.Rel(dir, path); err == nil && filepath.IsAbs(path) {
		path = rel
	}
	f, ok := m[filepath.ToSlash(path)]
	return f.Digest, ok
}

// walk lists the regular files under dir, except the manifest, and
// whatever else is there that is neither a file nor a directory (a
// symbolic link, a device, a socket).
func walk(dir string) (files, odd []string, err error) {
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		switch {
		case d.Type().IsRegular():
			if rel != ManifestName {
				files = append(files, filepath.ToSlash(rel))
			}
		case !d.IsDir():
			odd = append(odd, filepath.ToSlash(rel))
		}
		return nil
	})
	return files, odd, err
}

// SealTree hashes every regular file under dir and records the digests in
// dir's manifest, synced to disk. It is called once, when the directory
// is made, before it is renamed into place.
func SealTree(dir string) (Manifest, error) {
	files, odd, err := walk(dir)
	if err != nil {
		return nil, fault.Infraf("seal %s: %w", dir, err)
	}
	m := Manifest{}
	for _, rel := range odd {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		target, err := os.Readlink(p)
		if err != nil {
			return nil, fault.Infraf("seal %s: %s is neither a file, a directory nor a symbolic link", dir, rel)
		}
		m[rel] = TreeFile{Link: target}
	}
	for _, rel := range files {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		if err := syncFile(p); err != nil {
			return nil, fault.Infraf("seal %s: %w", p, err)
		}
		d, err := FileDigest(p, digest.SHA256)
		if err != nil {
			return nil, fault.Infraf("seal %s: %w", p, err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			return nil, fault.Infraf("seal %s: %w", p, err)
		}
		m[rel] = TreeFile{Digest: d, Stamp: StampOf(fi)}
	}
	return m, m.write(dir)
}

func (m Manifest) write(dir string) error {
	b, _ := json.MarshalIndent(m, "", "  ")
	if err := atomicfile.Write(filepath.Join(dir, ManifestName), b, 0o644); err != nil {
		return fault.Infraf("seal %s: %w", dir, err)
	}
	return nil
}

// CheckTree proves that a sealed directory still holds exactly what its
// manifest records: no file missing, added or changed. A file is rehashed
// only when its stamp moved. The first difference is a *CorruptError
// naming the file.
func CheckTree(dir string) (Manifest, error) { return checkTree(dir, false) }

// VerifyTree is CheckTree that rehashes every file, stamps or not.
func VerifyTree(dir string) (Manifest, error) { return checkTree(dir, true) }

// CheckTreeFiles is CheckTree for some files of a sealed directory only:
// those a reader is about to use. Each must be in the manifest.
func CheckTreeFiles(dir string, rels ...string) error {
	m, err := readManifest(dir)
	if err != nil {
		return err
	}
	for _, rel := range rels {
		if _, ok := m[rel]; !ok {
			return &CorruptError{Path: filepath.Join(dir, filepath.FromSlash(rel)), Why: "not in the manifest"}
		}
	}
	return m.check(dir, rels, false)
}

func readManifest(dir string) (Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, ManifestName))
	if err != nil {
		return nil, &CorruptError{Path: filepath.Join(dir, ManifestName), Why: "no manifest"}
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil || m == nil {
		return nil, &CorruptError{Path: filepath.Join(dir, ManifestName), Why: "unreadable manifest"}
	}
	return m, nil
}

func checkTree(dir string, full bool) (Manifest, error) {
	m, err := readManifest(dir)
	if err != nil {
		return nil, err
	}
	files, odd, err := walk(dir)
	if err != nil {
		return nil, fault.Infraf("check %s: %w", dir, err)
	}
	for _, rel := range odd {
		if m[rel].Link == "" {
			return nil, &CorruptError{Path: filepath.Join(dir, filepath.FromSlash(rel)), Why: "not a regular file the manifest records (a symbolic link or a device was added)"}
		}
	}
	for _, rel := range files {
		if _, ok := m[rel]; !ok {
			return nil, &CorruptError{Path: filepath.Join(dir, filepath.FromSlash(rel)), Why: "not in the manifest"}
		}
	}
	if err := m.check(dir, slices.Sorted(maps.Keys(m)), full); err != nil {
		return nil, err
	}
	return m, nil
}

// check proves the files rels of dir against m, rehashing a file whose
// stamp moved (every file when full), and records the new stamps.
func (m Manifest) check(dir string, rels []string, full bool) error {
	rehashed := false
	for _, rel := range rels {
		want := m[rel]
		p := filepath.Join(dir, filepath.FromSlash(rel))
		fi, err := os.Lstat(p)
		if err != nil {
			return &CorruptError{Path: p, Expected: want.Digest, Why: "missing"}
		}
		if want.Link != "" {
			if target, err := os.Readlink(p); err != nil || target != want.Link {
				return &CorruptError{Path: p, Why: "the symbolic link to " + want.Link + " was changed"}
			}
			continue
		}
		if !fi.Mode().IsRegular() {
			return &CorruptError{Path: p, Expected: want.Digest, Why: "not a regular file (replaced by a symbolic link?)"}
		}
		if !full && StampOf(fi) == want.Stamp {
			continue
		}
		got, err := FileDigest(p, want.Digest.Algorithm())
		if err != nil {
			return fault.Infraf("check %s: %w", p, err)
		}
		if got != want.Digest {
			return &CorruptError{Path: p, Expected: want.Digest, Actual: got}
		}
		want.Stamp, rehashed = StampOf(fi), rehashed || StampOf(fi) != want.Stamp
		m[rel] = want
	}
	if rehashed {
		_ = m.write(dir) // the new stamps spare the next check the hashing
	}
	return nil
}

// IsCorrupt reports whether err says a cached file is corrupt.
func IsCorrupt(err error) bool {
	var c *CorruptError
	return errors.As(err, &c)
}
