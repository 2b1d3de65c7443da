package profiles

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/envctl/envctl/profiles/base/fault"
)

// The example profiles of this directory and their locks ship inside the
// binary: after `go install` they run in any directory.
//
//go:embed *.yaml *.lock
var builtinFiles embed.FS

// Builtin is the profiles (and their locks) the binary carries.
func Builtin() fs.FS { return builtinFiles }

// Origin says where a profile was found: a directory of the search path
// (its label) or the binary.
type Origin string

// OriginBuiltin is a profile the binary carries.
const OriginBuiltin Origin = "built-in"

// Dir is a directory of the search path and how `envctl profiles` names it
// (./profiles, config dir, ENVCTL_PROFILES_DIR).
type Dir struct {
	Path   string
	Origin Origin
}

// builtinNames lists the names of the built-in profiles.
func (l Loader) builtinNames() []string {
	if l.Builtin == nil {
		return nil
	}
	var names []string
	ents, _ := fs.ReadDir(l.Builtin, ".")
	for _, e := range ents {
		if n := e.Name(); !e.IsDir() && strings.HasSuffix(n, ".yaml") {
			names = append(names, strings.TrimSuffix(n, ".yaml"))
		}
	}
	slices.Sort(names)
	return names
}

// builtinPath writes a built-in profile and its lock where path-based
// code can read them, and returns the profile's path. The files go, read
// only, into a directory named for the content of every built-in file
// under BuiltinDir: two envctl binaries never see each other's copies,
// and a copy is never edited. A lock that must change goes to a file the
// user owns (see Adopt).
func (l Loader) builtinPath(name string) (string, error) {
	if l.BuiltinDir == "" {
		return "", fault.Infraf("built-in profile %s: no directory to unpack it into (set ENVCTL_CACHE_DIR)", name)
	}
	h := sha256.New()
	names := l.builtinNames()
	for _, n := range names {
		for _, f := range []string{n + ".yaml", n + ".lock"} {
			b, _ := fs.ReadFile(l.Builtin, f)
			fmt.Fprintf(h, "%s %d\n", f, len(b))
			h.Write(b)
		}
	}
	dir := filepath.Join(l.BuiltinDir, hex.EncodeToString(h.Sum(nil))[:16])
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fault.Infraf("built-in profile %s: %w", name, err)
	}
	for _, f := range []string{name + ".yaml", name + ".lock"} {
		b, err := fs.ReadFile(l.Builtin, f)
		if errors.Is(err, fs.ErrNotExist) && strings.HasSuffix(f, ".lock") {
			continue
		}
		if err != nil {
			return "", fault.Infraf("built-in profile %s: %w", name, err)
		}
		dst := filepath.Join(dir, f)
		if have, err := os.ReadFile(dst); err == nil && bytes.Equal(have, b) {
			continue
		}
		tmp, err := os.CreateTemp(dir, ".new-"+f)
		if err != nil {
			return "", fault.Infraf("built-in profile %s: %w", name, err)
		}
		_, werr := tmp.Write(b)
		cerr := tmp.Close()
		if err := errors.Join(werr, cerr, os.Chmod(tmp.Name(), 0o444), os.Rename(tmp.Name(), dst)); err != nil {
			_ = os.Remove(tmp.Name())
			return "", fault.Infraf("built-in profile %s: %w", name, err)
		}
	}
	return filepath.Join(dir, name+".yaml"), nil
}

// IsBuiltinCopy reports whether a profile was read from the unpacked copy
// of a built-in one.
func (l Loader) IsBuiltinCopy(p *Profile) bool {
	if l.BuiltinDir == "" || p == nil {
		return false
	}
	rel, err := filepath.Rel(l.BuiltinDir, p.Path)
	return err == nil && !strings.HasPrefix(rel, "..") && strings.Count(filepath.ToSlash(rel), "/") == 1
}

// Adopt makes a built-in profile the user's before its lock is written:
// the profile and its lock are copied into AdoptDir (the user's config
// directory), which the search path reads before the binary, and p is
// pointed there. It returns the new path ("" when p is the user's already).
// A re-pin thus never edits the binary's copy, and the next run finds
// the user's.
func (l Loader) Adopt(p *Profile) (string, error) {
	if !l.IsBuiltinCopy(p) {
		return "", nil
	}
	if l.AdoptDir == "" {
		return "", fault.Inputf("built-in profile %s: its lock must change, and there is no directory of yours to write it to; run `envctl init %s` and use ./profiles/%s.yaml", p.Name, p.Name, p.Name)
	}
	if err := os.MkdirAll(l.AdoptDir, 0o755); err != nil {
		return "", fault.Infraf("built-in profile %s: %w", p.Name, err)
	}
	dst := filepath.Join(l.AdoptDir, filepath.Base(p.Path))
	if _, err := os.Stat(dst); err == nil {
		return "", fault.Inputf("built-in profile %s: %s exists already; use it (pass its path) or remove it", p.Name, dst)
	}
	for _, f := range []string{p.Path, LockPathOf(p.Path)} {
		b, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) && f != p.Path {
			continue
		}
		if err != nil {
			return "", fault.Infraf("built-in profile %s: %w", p.Name, err)
		}
		if err := os.WriteFile(filepath.Join(l.AdoptDir, filepath.Base(f)), b, 0o644); err != nil {
			return "", fault.Infraf("built-in profile %s: %w", p.Name, err)
		}
	}
	p.Path = dst
	return dst, nil
}

// builtinEntries lists the built-in profiles not hidden by a file of the
// same name.
func (l Loader) builtinEntries(seen map[string]bool) []Entry {
	var out []Entry
	for _, n := range l.builtinNames() {
		if seen[n] {
			continue
		}
		seen[n] = true
		e := Entry{Name: n, Path: "builtin:" + n, Origin: OriginBuiltin}
		b, _ := fs.ReadFile(l.Builtin, n+".yaml")
		if _, err := Parse(path.Join("builtin:", n+".yaml"), b, l.Overrides); err != nil {
			e.Err = err.Error()
		}
		if _, err := fs.Stat(l.Builtin, n+".lock"); err == nil {
			e.Locked = true
		}
		out = append(out, e)
	}
	return out
}
