package lock

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"

	modfetch "golang.org/x/mod/module"

	"github.com/envctl/envctl/profiles"
)

// The forms a lock's fields must have. Every value that envctl turns into
// a path, a URL, a command argument or a linker flag is checked here,
// before anything uses it: a lock is input, and may be edited by hand,
// badly merged or truncated.
var (
	// plainRE is a name that is one path element: no separators, no "..".
	plainRE   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~-]*$`)
	versionRE = regexp.MustCompile(`^[0-9A-Za-z][0-9A-Za-z._+~:-]*$`)
	hex64RE   = regexp.MustCompile(`^[0-9a-f]{64}$`)
	commitRE  = regexp.MustCompile(`^[0-9a-f]{40}$`)
	sumRE     = regexp.MustCompile(`^h1:[A-Za-z0-9+/]+=*$`)
	stampRE   = regexp.MustCompile(`^[0-9]{8}T[0-9]{6}Z$`)
	// cellRE is a cell name: a profile name or axis=value pairs.
	cellRE      = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._+~=,@-]*$`)
	toolchainRE = regexp.MustCompile(`^go[0-9][0-9A-Za-z.+-]*$`)
	digestLen   = map[string]int{"sha256": 64, "sha512": 128}
)

// Validate checks the form of every field: digests are algo:hex of the
// right length, URLs use an allowed scheme, names are plain names, and
// nothing is missing. The first bad field is named in one line.
func (f *File) Validate(path string) error {
	bad := func(field, format string, args ...any) error {
		return &TamperedError{Lock: path, Field: field, Msg: fmt.Sprintf(format, args...)}
	}
	switch {
	case f.LockVersion == 0:
		return bad("lock_version", "missing: the file is empty, truncated or not a lock")
	case f.Profile == "" || !plainRE.MatchString(f.Profile):
		return bad("profile", "%q is not a profile name", f.Profile)
	case !isDigest(f.ProfileHash, "sha256"):
		return bad("profile_sha256", "%q is not sha256:<64 hex digits>", f.ProfileHash)
	case f.Arch == "" || !plainRE.MatchString(f.Arch):
		return bad("arch", "%q is not an architecture", f.Arch)
	case len(f.Artifacts) == 0:
		return bad("artifacts", "missing: the lock is truncated")
	case len(f.Cells) == 0:
		return bad("cells", "missing: the lock is truncated")
	}
	if err := f.Image.validate(bad); err != nil {
		return err
	}
	for i, a := range f.Artifacts {
		if err := a.validate(fmt.Sprintf("artifacts[%d]", i), bad); err != nil {
			return err
		}
	}
	for i, a := range f.Tools {
		if err := a.validate(fmt.Sprintf("tools[%d]", i), bad); err != nil {
			return err
		}
	}
	for i, c := range f.Cells {
		field := fmt.Sprintf("cells[%d]", i)
		if !cellRE.MatchString(c.Name) {
			return bad(field+".name", "%q is not a cell name", c.Name)
		}
		if len(c.Components) == 0 {
			return bad(field+".components", "missing: the lock is truncated")
		}
	}
	return nil
}

type badField func(field, format string, args ...any) error

// Check applies a lock's rules for its image to an image description read
// from elsewhere (an image store, a layout tarball). The error names the
// field as a lock would.
func (img Image) Check() error {
	return img.validate(func(field, format string, args ...any) error {
		return fmt.Errorf("%s: %s", strings.TrimPrefix(field, "image."), fmt.Sprintf(format, args...))
	})
}

func (img Image) validate(bad badField) error {
	switch {
	case !plainRE.MatchString(img.Name):
		return bad("image.name", "%q is not an image name", img.Name)
	case img.Kind != ImageLocal && img.Kind != ImageDownload:
		return bad("image.kind", "%q is not an image kind: local or download", img.Kind)
	case !isDigest(img.Digest, ""):
		return bad("image.digest", "%q is not a digest: sha256:<64 hex digits> or sha512:<128>", img.Digest)
	case img.Kernel != "" && !isDigest(img.Kernel, ""):
		return bad("image.kernel", "%q is not a digest", img.Kernel)
	case img.Initrd != "" && !isDigest(img.Initrd, ""):
		return bad("image.initrd", "%q is not a digest", img.Initrd)
	case img.Format != "raw" && img.Format != "qcow2":
		return bad("image.format", "%q is not a disk format: raw or qcow2", img.Format)
	case img.Recipe != "" && !hex64RE.MatchString(img.Recipe):
		return bad("image.recipe", "%q is not a recipe hash (64 hex digits)", img.Recipe)
	case img.Snapshot != "" && !stampRE.MatchString(img.Snapshot):
		return bad("image.snapshot", "%q is not a snapshot timestamp (YYYYMMDDTHHMMSSZ)", img.Snapshot)
	case img.Kind == ImageDownload:
		if err := checkURL(img.URL, false); err != nil {
			return bad("image.url", "%v", err)
		}
	}
	for name, v := range img.Packages {
		if !plainRE.MatchString(name) || !versionRE.MatchString(v) {
			return bad("image.packages", "%q %q is not a package and its version", name, v)
		}
	}
	return nil
}

func (a Artifact) validate(field string, bad badField) error {
	for _, check := range []func(string, badField) error{a.validateNames, a.validatePins, a.validateOrigin} {
		if err := check(field, bad); err != nil {
			return err
		}
	}
	return nil
}

// validateNames checks what becomes a path or an argument.
func (a Artifact) validateNames(field string, bad badField) error {
	switch {
	case !plainRE.MatchString(a.Component):
		return bad(field+".component", "%q is not a component name", a.Component)
	case !versionRE.MatchString(a.Version):
		return bad(field+".version", "%q is not a version", a.Version)
	case a.Recipe != "" && !plainRE.MatchString(a.Recipe):
		return bad(field+".recipe", "%q is not a recipe name", a.Recipe)
	case a.Package != "" && !plainRE.MatchString(a.Package):
		return bad(field+".package", "%q is not a package name", a.Package)
	case a.Toolchain != "" && !toolchainRE.MatchString(a.Toolchain):
		return bad(field+".toolchain", "%q is not a Go toolchain", a.Toolchain)
	case a.Bundle != "" && strings.ContainsAny(a.Bundle, "/\\ \n"):
		return bad(field+".bundle", "%q is not an artifact key", a.Bundle)
	}
	if _, err := profiles.ParseSource(string(a.Source)); err != nil {
		return bad(field+".source", "%v", err)
	}
	if a.Module != "" {
		if err := modfetch.CheckPath(a.Module); err != nil {
			return bad(field+".module", "%q is not a Go module path (%v)", a.Module, err)
		}
	}
	return nil
}

// validatePins checks the digests, sums and where the artifact comes from.
func (a Artifact) validatePins(field string, bad badField) error {
	switch {
	case a.SHA256 != "" && !hex64RE.MatchString(a.SHA256):
		return bad(field+".sha256", "%q is not 64 hex digits", a.SHA256)
	case a.ModuleSum != "" && !sumRE.MatchString(a.ModuleSum):
		return bad(field+".module_sum", "%q is not a Go module sum (h1:<base64>)", a.ModuleSum)
	}
	if a.URL != "" {
		if err := checkURL(a.URL, a.Source.Kind() == profiles.KindMirror); err != nil {
			return bad(field+".url", "%v", err)
		}
	}
	for name, sum := range a.Binaries {
		if !plainRE.MatchString(name) {
			return bad(field+".binaries", "%q is not a file name", name)
		}
		if !hex64RE.MatchString(sum) {
			return bad(field+".binaries."+name, "%q is not 64 hex digits", sum)
		}
	}
	return nil
}

// validateOrigin checks the commit, which is linked into the binaries.
func (a Artifact) validateOrigin(field string, bad badField) error {
	o := a.Origin
	if o == nil {
		return nil
	}
	switch {
	case !commitRE.MatchString(o.Commit):
		return bad(field+".origin.commit", "%q is not a commit (40 hex digits)", o.Commit)
	case o.Release != "" && !commitRE.MatchString(o.Release):
		return bad(field+".origin.release_commit", "%q is not a commit (40 hex digits)", o.Release)
	case o.Source != "" && o.Source != CommitFromModuleProxy && o.Source != CommitFromCatalog:
		return bad(field+".origin.source", "%q is not a commit source: module-proxy or catalog", o.Source)
	}
	if o.URL != "" {
		if err := checkURL(o.URL, false); err != nil {
			return bad(field+".origin.url", "%v", err)
		}
	}
	return nil
}

// isDigest reports whether s is algo:hex of the algorithm's length (any
// known algorithm when algo is "").
func isDigest(s, algo string) bool {
	a, hex, ok := strings.Cut(s, ":")
	n, known := digestLen[a]
	if !ok || !known || (algo != "" && a != algo) || len(hex) != n {
		return false
	}
	for _, c := range hex {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// checkURL allows http(s) downloads, and file:// only for a mirror the
// user named (ENVCTL_MIRROR=file:///dir).
func checkURL(s string, fileOK bool) error {
	u, err := url.Parse(s)
	if err != nil || u.Host == "" && u.Scheme != "file" {
		return fmt.Errorf("%q is not a URL", s)
	}
	switch u.Scheme {
	case "https", "http":
		return nil
	case "file":
		if fileOK {
			return nil
		}
	}
	return fmt.Errorf("%q: scheme %q is not allowed here (use https)", s, u.Scheme)
}
