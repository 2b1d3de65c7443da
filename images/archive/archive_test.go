package archive

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func releaseAt(t time.Time) string {
	return "Origin: Debian\nSuite: stable\nDate: " + t.UTC().Format(time.RFC1123) + "\nArchitectures: amd64\n"
}

func stamp(s string) time.Time {
	t, err := time.Parse(StampLayout, s)
	if err != nil {
		panic(err)
	}
	return t
}

// snapshots is an archive in snapshot.debian.org's layout: for each
// archive, its imports by timestamp, each with the Release date of every
// suite it holds.
type snapshots map[string]map[string]map[string]time.Time

// serve answers like snapshot.debian.org: a time that is not an import
// redirects to the newest import at or before it.
func (s snapshots) serve(t *testing.T) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		parts := strings.SplitN(strings.TrimPrefix(r.URL.Path, "/archive/"), "/", 3)
		imports, ok := s[parts[0]]
		if len(parts) < 2 || !ok {
			http.NotFound(w, r)
			return
		}
		at := parts[1]
		if _, exact := imports[at]; !exact {
			best := ""
			for ts := range imports {
				if ts <= at && ts > best {
					best = ts
				}
			}
			if best == "" {
				http.NotFound(w, r)
				return
			}
			http.Redirect(w, r, "/archive/"+parts[0]+"/"+best+"/"+strings.Join(parts[2:], "/"), http.StatusMovedPermanently)
			return
		}
		rest := ""
		if len(parts) == 3 {
			rest = parts[2]
		}
		if rest == "" {
			fmt.Fprintln(w, "<html>index</html>")
			return
		}
		suite, ok := strings.CutSuffix(strings.TrimPrefix(rest, "dists/"), "/Release")
		date, known := imports[at][suite]
		if !ok || !known {
			http.NotFound(w, r)
			return
		}
		fmt.Fprint(w, releaseAt(date))
	}))
	t.Cleanup(srv.Close)
	return srv
}

// layout writes the same archive as a local tree.
func (s snapshots) layout(t *testing.T) string {
	dir := t.TempDir()
	for archive, imports := range s {
		for ts, suites := range imports {
			for suite, date := range suites {
				p := filepath.Join(dir, archive, ts, "dists", suite)
				if err := os.MkdirAll(p, 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(p, "Release"), []byte(releaseAt(date)), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return dir
}

// The archive state 20261204T081651Z (the security suite's Release date,
// the newest) was imported at 09:02 (debian) and 08:40 (security); the
// state before it was imported at 03:00.
var testArchive = snapshots{
	"debian": {
		"20261204T030000Z": {"bookworm": stamp("20261108T100000Z"), "bookworm-updates": stamp("20261203T200000Z")},
		"20261204T090212Z": {"bookworm": stamp("20261108T100000Z"), "bookworm-updates": stamp("20261204T020000Z")},
		"20261204T150000Z": {"bookworm": stamp("20261108T100000Z"), "bookworm-updates": stamp("20261204T140000Z")},
	},
	"debian-security": {
		"20261204T030000Z": {"bookworm-security": stamp("20261203T220000Z")},
		"20261204T084000Z": {"bookworm-security": stamp("20261204T081651Z")},
		"20261204T150000Z": {"bookworm-security": stamp("20261204T143000Z")},
	},
}

func TestFindSnapshot(t *testing.T) {
	srv := testArchive.serve(t)
	dir := testArchive.layout(t)
	for _, base := range []struct{ name, url string }{{"http", srv.URL + "/archive"}, {"file", "file://" + dir}} {
		t.Run(base.name, func(t *testing.T) {
			tests := []struct {
				stamp      string
				wantDebian string // the exact debian import served
				wantSec    string
				wantErr    string
			}{
				// At 08:16:51 itself the security import is not there yet:
				// envctl moves on to 09:16:51, where both are.
				{"20261204T081651Z", "20261204T090212Z", "20261204T084000Z", ""},
				// The state of 03:00 (newest Release 22:00 the day before).
				{"20261203T220000Z", "20261204T030000Z", "20261204T030000Z", ""},
				// A state that never was: the archive moves past it.
				{"20261204T050000Z", "", "", "has no snapshot with the archive state of 20261204T050000Z"},
				{"yesterday", "", "", "not a snapshot timestamp"},
			}
			for _, tt := range tests {
				src, err := FindSnapshot(context.Background(), base.url, tt.stamp, "bookworm")
				if tt.wantErr != "" {
					if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
						t.Errorf("%s: err %v, want %q", tt.stamp, err, tt.wantErr)
					}
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", tt.stamp, err)
				}
				if src.Kind != Snapshot || src.Stamps["debian"] != tt.wantDebian || src.Stamps["debian-security"] != tt.wantSec {
					t.Errorf("%s: served %v, want debian %s, security %s", tt.stamp, src.Stamps, tt.wantDebian, tt.wantSec)
				}
				want := []string{"/debian/" + tt.wantDebian + " bookworm main", "/debian/" + tt.wantDebian + " bookworm-updates main", "/debian-security/" + tt.wantSec + " bookworm-security main"}
				if len(src.Lines) != 3 {
					t.Fatalf("%s: lines %q", tt.stamp, src.Lines)
				}
				for i, w := range want {
					if !strings.HasSuffix(src.Lines[i], w) || !strings.Contains(src.Lines[i], "check-valid-until=no") {
						t.Errorf("%s: line %q, want …%s", tt.stamp, src.Lines[i], w)
					}
				}
				if base.name == "file" && !strings.Contains(src.Lines[0], "trusted=yes] copy://"+dir) {
					t.Errorf("a local snapshot is read with copy:// and trusted: %q", src.Lines[0])
				}
			}
		})
	}
}

func TestFindSnapshotUnreachable(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	url := srv.URL
	srv.Close() // nothing listens there now
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err := FindSnapshot(ctx, url+"/archive", "20261204T081651Z", "bookworm")
	var unreachable *UnreachableError
	if !errors.As(err, &unreachable) {
		t.Fatalf("err %v, want an UnreachableError", err)
	}
}

func TestMirrorSource(t *testing.T) {
	dir := snapshots{"m": {"20260101T000000Z": {"bookworm": stamp("20261108T100000Z"), "bookworm-updates": stamp("20261204T020000Z")}}}.layout(t)
	root := "file://" + filepath.Join(dir, "m", "20260101T000000Z")
	src, err := MirrorSource(context.Background(), root+"/", "bookworm")
	if err != nil {
		t.Fatal(err)
	}
	// The mirror has no security suite: only what it has is read.
	if src.Kind != Mirror || len(src.Lines) != 2 || !strings.HasSuffix(src.Lines[1], " bookworm-updates main") {
		t.Errorf("lines %q", src.Lines)
	}
	for _, bad := range []struct{ url, want string }{
		{root, "has no suite trixie"},
		{"ftp://example.invalid/debian", "use an http://, https:// or file:/// URL"},
	} {
		suite := "bookworm"
		if strings.Contains(bad.want, "trixie") {
			suite = "trixie"
		}
		if _, err := MirrorSource(context.Background(), bad.url, suite); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: err %v, want %q", bad.url, err, bad.want)
		}
	}
}

func TestLiveSourceIsMmdebstrapsDefault(t *testing.T) {
	got := LiveSource("trixie").Lines
	want := []string{"deb http://deb.debian.org/debian trixie main", "deb http://deb.debian.org/debian trixie-updates main", "deb http://security.debian.org/debian-security trixie-security main"}
	if !slices.Equal(got, want) {
		t.Errorf("lines %q", got)
	}
}

func TestStateOf(t *testing.T) {
	tests := []struct {
		record, want, err string
	}{
		{"deb.debian.org_debian_dists_bookworm_InRelease Sat, 08 Nov 2026 10:00:00 UTC\n" +
			"deb.debian.org_debian_dists_bookworm-updates_InRelease Thu, 04 Dec 2026 02:00:00 UTC\n" +
			"security.debian.org_debian-security_dists_bookworm-security_InRelease Thu, 04 Dec 2026 08:16:51 UTC\n", "20261204T081651Z", ""},
		{"x_Release Thu, 4 Dec 2026 08:16:51 +0000\n", "20261204T081651Z", ""},
		{"", "", "recorded no Release file"},
		{"x_Release someday\n", "", "unreadable Date"},
	}
	for _, tt := range tests {
		got, err := StateOf([]byte(tt.record))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("%q: err %v, want %q", tt.record, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: %q %v, want %q", tt.record, got, err, tt.want)
		}
	}
}
