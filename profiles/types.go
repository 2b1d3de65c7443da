package profiles

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Role is the part a component plays in the stack. The runtime role is
// filled by runc or crun.
type Role string

// The roles a profile may pin.
const (
	RoleCRIO     Role = "cri-o"
	RoleCRITools Role = "cri-tools"
	RoleRuntime  Role = "runtime"
	RoleConmon   Role = "conmon"
	RoleCNI      Role = "cni-plugins"
)

// Roles lists the roles in install order.
var Roles = []Role{RoleCRIO, RoleCRITools, RoleRuntime, RoleConmon, RoleCNI}

// RequiredRoles must be pinned by every profile.
var RequiredRoles = []Role{RoleCRIO, RoleCRITools, RoleRuntime}

// Runtimes lists the OCI runtimes the runtime role may name.
var Runtimes = []string{"runc", "crun"}

func roleIndex(r Role) int {
	for i, x := range Roles {
		if x == r {
			return i
		}
	}
	return len(Roles)
}

// ParseRole checks a role name.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("unknown component %q; use %s", s, joinRoles(Roles))
}

func joinRoles(rs []Role) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}

// SourceKind is where a component's bits come from.
type SourceKind string

// The source kinds.
const (
	KindRelease SourceKind = "release" // upstream release artifact, checksum-verified
	KindGoMod   SourceKind = "gomod"   // built from the Go module proxy at the exact version
	KindMirror  SourceKind = "mirror"  // $ENVCTL_MIRROR, laid out like upstream
	KindPackage SourceKind = "package" // the guest image's distribution package
	KindBundle  SourceKind = "bundle"  // inside the CRI-O release bundle
	KindFile    SourceKind = "file"    // a local file, file:///path
)

// SourceKinds lists every kind, for messages.
var SourceKinds = []SourceKind{KindRelease, KindGoMod, KindMirror, KindPackage, KindBundle, KindFile}

// Source is a component source as written in profiles and locks: a kind
// name ("gomod") or, for local files, a file:///path URL.
type Source string

// The sources that are plain kind names.
const (
	SourceRelease = Source(KindRelease)
	SourceGoMod   = Source(KindGoMod)
	SourceMirror  = Source(KindMirror)
	SourcePackage = Source(KindPackage)
	SourceBundle  = Source(KindBundle)
)

const filePrefix = "file://"

// FileSource is the source of a local file.
func FileSource(path string) Source { return Source(filePrefix + path) }

// ParseSource checks a source as written by a user.
func ParseSource(s string) (Source, error) {
	if strings.HasPrefix(s, filePrefix) {
		if !strings.HasPrefix(s, "file:///") {
			return "", fmt.Errorf("%q: a file source is an absolute URL like file:///usr/local/bin/crio", s)
		}
		return Source(s), nil
	}
	for _, k := range SourceKinds {
		if k != KindFile && string(k) == s {
			return Source(s), nil
		}
	}
	return "", fmt.Errorf("unknown source %q; use release, gomod, mirror, package, bundle or file:///path", s)
}

// Kind returns the source's kind ("" for an invalid source).
func (s Source) Kind() SourceKind {
	if strings.HasPrefix(string(s), filePrefix) {
		return KindFile
	}
	return SourceKind(s)
}

// Path is the local path of a file source.
func (s Source) Path() string { return strings.TrimPrefix(string(s), filePrefix) }

// TestName names the test suites a profile runs: envctl's own
// image-volume test, CRI-O's own bats file from the locked CRI-O source
// ("upstream", or "upstream:FILE.bats" for another file of its test/
// directory), both side by side, or none.
type TestName string

// The tests.
const (
	TestImageVolume TestName = "image-volume-lifecycle"
	TestUpstream    TestName = "upstream"
	TestBoth        TestName = "both"
	TestNone        TestName = "none"
)

// UpstreamDefaultFile is the upstream file "upstream" and "both" run.
const UpstreamDefaultFile = "oci_volumes.bats"

// Tests lists the known tests.
var Tests = []TestName{TestImageVolume, TestUpstream, TestBoth, TestNone}

var batsFileRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+\.bats$`)

// ParseTestName checks a test name: one of Tests, or "upstream:FILE.bats".
func ParseTestName(s string) (TestName, error) {
	t := TestName(s)
	if slices.Contains(Tests, t) {
		return t, nil
	}
	if f, ok := strings.CutPrefix(s, string(TestUpstream)+":"); ok {
		if batsFileRE.MatchString(f) {
			return t, nil
		}
		return "", fmt.Errorf("test %q: %q is not a file name in CRI-O's test/ directory; use upstream:NAME.bats", s, f)
	}
	return "", fmt.Errorf("unknown test %q; known: image-volume-lifecycle, upstream, upstream:FILE.bats, both, none", s)
}

// Own says whether envctl's own image-volume test runs.
func (t TestName) Own() bool { return t == TestImageVolume || t == TestBoth }

// UpstreamFile is the upstream bats file that runs, if any.
func (t TestName) UpstreamFile() (string, bool) {
	switch {
	case t == TestUpstream || t == TestBoth:
		return UpstreamDefaultFile, true
	case strings.HasPrefix(string(t), string(TestUpstream)+":"):
		return strings.TrimPrefix(string(t), string(TestUpstream)+":"), true
	}
	return "", false
}

// Runs says whether any test runs.
func (t TestName) Runs() bool { return t != TestNone && t != "" }

// Set implements pflag.Value (--test).
func (t *TestName) Set(s string) error {
	v, err := ParseTestName(s)
	if err != nil {
		return err
	}
	*t = v
	return nil
}

func (t TestName) String() string { return string(t) }

// Type implements pflag.Value.
func (t *TestName) Type() string { return "test" }
