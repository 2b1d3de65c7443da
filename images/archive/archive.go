package archive

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Kind is where a build's packages come from.
type Kind string

// The kinds of source.
const (
	// Live is Debian's own mirrors, which serve only current versions.
	Live Kind = "live"
	// Mirror is one mirror named by URL (--mirror, ENVCTL_DEBIAN_MIRROR).
	Mirror Kind = "mirror"
	// Snapshot is the snapshot archive at one archive state.
	Snapshot Kind = "snapshot"
)

// Debian's mirrors, as mmdebstrap uses them for a stable suite.
const (
	LiveDebian   = "http://deb.debian.org/debian"
	LiveSecurity = "http://security.debian.org/debian-security"
	// DefaultSnapshotBase is snapshot.debian.org's archive root; its
	// debian/ and debian-security/ trees hold every archive state by time.
	DefaultSnapshotBase = "https://snapshot.debian.org/archive"
)

// StampLayout is a snapshot timestamp: 20261204T081651Z.
const StampLayout = "20060102T150405Z"

// Source is where one build takes its packages from, as apt source lines.
type Source struct {
	Kind Kind `json:"kind"`
	// URL is the mirror, or the snapshot archive's root.
	URL string `json:"url,omitempty"`
	// Stamps are the exact snapshot timestamps served, by archive
	// ("debian", "debian-security"), for a snapshot source.
	Stamps map[string]string `json:"stamps,omitempty"`
	// Lines are the apt source lines ("deb [opts] URL SUITE main").
	Lines []string `json:"lines"`
}

func (s Source) String() string {
	switch s.Kind {
	case Mirror:
		return "mirror " + s.URL
	case Snapshot:
		return fmt.Sprintf("snapshot archive %s at %s", s.URL, s.Stamps["debian"])
	}
	return "Debian's mirrors (" + LiveDebian + ", " + LiveSecurity + ")"
}

// suite is one suite a build reads, in its archive.
type suite struct{ archive, name string }

// suitesOf lists what an image of a Debian stable suite reads, as
// mmdebstrap does: the suite, its -updates and its -security suite.
func suitesOf(name string) []suite {
	return []suite{{"debian", name}, {"debian", name + "-updates"}, {"debian-security", name + "-security"}}
}

// LiveSource reads Debian's own mirrors.
func LiveSource(suiteName string) Source {
	s := Source{Kind: Live}
	for _, su := range suitesOf(suiteName) {
		base := LiveDebian
		if su.archive == "debian-security" {
			base = LiveSecurity
		}
		s.Lines = append(s.Lines, fmt.Sprintf("deb %s %s main", base, su.name))
	}
	return s
}

// MirrorSource reads one mirror (http(s):// or file://) laid out as a
// Debian archive: the suite, and its -updates and -security suites when
// the mirror has them. The suite itself must be there.
func MirrorSource(ctx context.Context, url, suiteName string) (Source, error) {
	url = strings.TrimSuffix(url, "/")
	if err := checkURL(url); err != nil {
		return Source{}, fmt.Errorf("mirror %s: %w", url, err)
	}
	s := Source{Kind: Mirror, URL: url}
	for i, su := range suitesOf(suiteName) {
		_, _, err := readRelease(ctx, url+"/dists/"+su.name)
		switch {
		case err == nil:
			s.Lines = append(s.Lines, line(url, su.name))
		case i == 0:
			return Source{}, fmt.Errorf("mirror %s has no suite %s (%w); give the root of a Debian mirror, where dists/%s/Release is", url, su.name, err, su.name)
		}
	}
	return s, nil
}

// line is one apt source line; a local tree is the user's own copy, read
// with apt's copy:// (the build's chroot need not see the path) and not
// signed.
func line(url, suiteName string) string {
	opts := "check-valid-until=no"
	if path, ok := strings.CutPrefix(url, "file://"); ok {
		opts += " trusted=yes"
		url = "copy://" + path
	}
	return fmt.Sprintf("deb [%s] %s %s main", opts, url, suiteName)
}

func checkURL(url string) error {
	for _, p := range []string{"http://", "https://", "file:///"} {
		if strings.HasPrefix(url, p) {
			return nil
		}
	}
	return fmt.Errorf("use an http://, https:// or file:/// URL")
}

// UnreachableError is a snapshot archive that did not answer.
type UnreachableError struct {
	URL string
	Err error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("the snapshot archive %s is not reachable: %v", e.URL, e.Err)
}

func (e *UnreachableError) Unwrap() error { return e.Err }

// NoStateError is a snapshot archive that has no snapshot with the
// archive state asked for.
type NoStateError struct {
	URL, Stamp string
	Saw        []string
}

func (e *NoStateError) Error() string {
	saw := "nothing in the day after it"
	if len(e.Saw) > 0 {
		saw = "the states of " + strings.Join(e.Saw, ", ")
	}
	return fmt.Sprintf("the snapshot archive %s has no snapshot with the archive state of %s (it serves %s)", e.URL, e.Stamp, saw)
}

// probeHours is how far past a state's Release date envctl looks for the
// snapshot that holds it: the snapshot archive imports each state some
// time after it was published.
const probeHours = 24

// FindSnapshot finds, in the snapshot archive at base, the snapshot that
// serves the archive state stamp names: the one whose suites' newest
// Release date is stamp and none newer. The archive answers a time with
// the newest snapshot at or before it, and imports a state a while after
// its Release date, so envctl asks for stamp, then hour by hour after it.
// Each archive's exact timestamp goes into the source lines.
func FindSnapshot(ctx context.Context, base, stamp, suiteName string) (Source, error) {
	base = strings.TrimSuffix(base, "/")
	if err := checkURL(base); err != nil {
		return Source{}, fmt.Errorf("snapshot archive %s: %w", base, err)
	}
	want, err := ParseStamp(stamp)
	if err != nil {
		return Source{}, err
	}
	var saw []string
	for h := 0; h <= probeHours; h++ {
		at := want.Add(time.Duration(h) * time.Hour).Format(StampLayout)
		src, newest, err := snapshotAt(ctx, base, at, suiteName)
		var unreachable *UnreachableError
		switch {
		case errors.As(err, &unreachable):
			return Source{}, err
		case errors.Is(err, errNoSnapshotYet):
			continue
		case err != nil:
			return Source{}, fmt.Errorf("snapshot archive %s at %s: %w", base, at, err)
		case newest.Equal(want):
			return src, nil
		case newest.After(want):
			saw = append(saw, newest.Format(StampLayout))
			return Source{}, &NoStateError{URL: base, Stamp: stamp, Saw: slices.Compact(saw)}
		}
		saw = append(saw, newest.Format(StampLayout))
	}
	return Source{}, &NoStateError{URL: base, Stamp: stamp, Saw: slices.Compact(saw)}
}

// snapshotAt reads the snapshot archive at one time: the lines of every
// suite it has, and the newest Release date among them.
func snapshotAt(ctx context.Context, base, at, suiteName string) (Source, time.Time, error) {
	src := Source{Kind: Snapshot, URL: base, Stamps: map[string]string{}}
	var newest time.Time
	for i, su := range suitesOf(suiteName) {
		root, err := snapshotRoot(ctx, base, su.archive, at)
		if err != nil {
			if i == 0 || !errors.Is(err, errNoSnapshotYet) && !errors.Is(err, errNoArchive) {
				return Source{}, time.Time{}, err
			}
			continue
		}
		date, _, err := readRelease(ctx, root+"/dists/"+su.name)
		if err != nil {
			if i == 0 {
				if isNetwork(err) {
					return Source{}, time.Time{}, &UnreachableError{URL: base, Err: err}
				}
				return Source{}, time.Time{}, fmt.Errorf("no suite %s: %w", su.name, err)
			}
			continue
		}
		src.Stamps[su.archive] = filepath.Base(root)
		src.Lines = append(src.Lines, line(root, su.name))
		if date.After(newest) {
			newest = date
		}
	}
	return src, newest, nil
}

// snapshotRoot is the exact snapshot of one archive that serves time at:
// for a local copy, the newest timestamp directory at or before it; over
// HTTP, where the archive redirects to it.
func snapshotRoot(ctx context.Context, base, archiveName, at string) (string, error) {
	if dir, ok := strings.CutPrefix(base, "file://"); ok {
		entries, err := os.ReadDir(filepath.Join(dir, archiveName))
		if errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("%s: %w", filepath.Join(dir, archiveName), errNoArchive)
		}
		if err != nil {
			return "", fmt.Errorf("%s: %w", filepath.Join(dir, archiveName), err)
		}
		best := ""
		for _, e := range entries {
			if _, err := ParseStamp(e.Name()); err == nil && e.Name() <= at && e.Name() > best {
				best = e.Name()
			}
		}
		if best == "" {
			return "", fmt.Errorf("%s: %w", filepath.Join(dir, archiveName), errNoSnapshotYet)
		}
		return base + "/" + archiveName + "/" + best, nil
	}
	url := base + "/" + archiveName + "/" + at + "/"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := client.Do(req)
	if err != nil {
		return "", &UnreachableError{URL: base, Err: err}
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return "", fmt.Errorf("%s: %w", url, errNoSnapshotYet)
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("%s: %s", url, resp.Status)
	}
	// The archive redirects to the exact snapshot; one that answers in
	// place serves the time asked for.
	final := strings.TrimSuffix(resp.Request.URL.String(), "/")
	if _, perr := ParseStamp(filepath.Base(final)); perr == nil {
		return final, nil
	}
	return strings.TrimSuffix(url, "/"), nil
}

// errNoArchive is a snapshot archive copy without one of the archives
// (debian-security, say): its suites are left out.
var errNoArchive = errors.New("no such archive in this copy")

// errNoSnapshotYet is an archive with no snapshot at or before a time.
var errNoSnapshotYet = errors.New("no snapshot at or before that time")

// client reads mirrors and snapshot archives; each request also ends with
// its context.
var client = &http.Client{Timeout: 30 * time.Second}

func isNetwork(err error) bool {
	var unreachable *UnreachableError
	return errors.As(err, &unreachable)
}

// readRelease reads a suite's Release date, from InRelease or Release.
func readRelease(ctx context.Context, dists string) (time.Time, []byte, error) {
	var errs []string
	for _, name := range []string{"InRelease", "Release"} {
		body, err := get(ctx, dists+"/"+name)
		if err != nil {
			if isNetwork(err) {
				return time.Time{}, nil, err
			}
			errs = append(errs, err.Error())
			continue
		}
		date, err := ReleaseDate(body)
		if err != nil {
			return time.Time{}, nil, fmt.Errorf("%s/%s: %w", dists, name, err)
		}
		return date, body, nil
	}
	return time.Time{}, nil, errors.New(strings.Join(errs, "; "))
}

func get(ctx context.Context, url string) ([]byte, error) {
	if path, ok := strings.CutPrefix(url, "file://"); ok {
		b, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("%s: not found", url)
		}
		return b, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, &UnreachableError{URL: url, Err: err}
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s: %s", url, resp.Status)
	}
	return io.ReadAll(io.LimitReader(resp.Body, 8<<20))
}

// ParseStamp reads a snapshot timestamp.
func ParseStamp(s string) (time.Time, error) {
	t, err := time.Parse(StampLayout, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is not a snapshot timestamp: write YYYYMMDDTHHMMSSZ, e.g. 20261204T081651Z", s)
	}
	return t, nil
}

// ReleaseDate reads the Date field of a Release or InRelease file.
func ReleaseDate(body []byte) (time.Time, error) {
	sc := bufio.NewScanner(bytes.NewReader(body))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "Date: ")
		if !ok {
			continue
		}
		for _, layout := range []string{time.RFC1123, time.RFC1123Z, "Mon, 2 Jan 2006 15:04:05 MST", "Mon, 2 Jan 2006 15:04:05 -0700"} {
			if t, err := time.Parse(layout, strings.TrimSpace(v)); err == nil {
				return t.UTC(), nil
			}
		}
		return time.Time{}, fmt.Errorf("unreadable Date %q", v)
	}
	return time.Time{}, errors.New("no Date field")
}

// dateLine matches a "FILE DATE" line of the build's archive record.
var dateLine = regexp.MustCompile(`^(\S+) (.+)$`)

// StateOf reads the archive state a build saw from the Release files it
// kept (one "LISTFILE Date-value" line each, as the build script writes
// them): the newest Release date, as a snapshot timestamp.
func StateOf(record []byte) (string, error) {
	var newest time.Time
	sc := bufio.NewScanner(bytes.NewReader(record))
	n := 0
	for sc.Scan() {
		m := dateLine.FindStringSubmatch(strings.TrimSpace(sc.Text()))
		if m == nil {
			continue
		}
		t, err := ReleaseDate([]byte("Date: " + m[2]))
		if err != nil {
			return "", fmt.Errorf("%s: %w", m[1], err)
		}
		n++
		if t.After(newest) {
			newest = t
		}
	}
	if n == 0 {
		return "", errors.New("the build recorded no Release file")
	}
	return newest.Format(StampLayout), nil
}
