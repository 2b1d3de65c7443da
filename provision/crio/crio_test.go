package crio

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artifacts"
	"github.com/envctl/envctl/provision/guest"
	"github.com/envctl/envctl/provision/guest/guesttest"
)

func TestParseVersion(t *testing.T) {
	tests := map[string]string{
		"crio version 1.34.0\nGitCommit: abc\n":                         "1.34.0",
		"crio version 1.34.0-rc.1\n":                                    "1.34.0-rc.1",
		"crictl version v1.30.0\n":                                      "1.30.0",
		"runc version 1.3.6\ncommit: v1.3.6-0\nspec: 1.2.1\ngo: go1.26": "1.3.6",
		"crun version 1.8.1\ncommit: 1234\nspec: 1.0.0\n+SYSTEMD":       "1.8.1",
		"conmon version 2.1.6\ncommit: unknown\n":                       "2.1.6",
		"CNI bridge plugin v1.1.1\nCNI protocol versions supported":     "1.1.1",
		"2.1.6+ds1-1":                   "2.1.6",
		"1.1.1+ds1-3+b17":               "1.1.1",
		"1.21-1":                        "1.21",
		"bash: crio: command not found": "",
	}
	for in, want := range tests {
		if got := ParseVersion(in); got != want {
			t.Errorf("ParseVersion(%q) = %q, want %q", in, got, want)
		}
	}
}

func part(role profiles.Role, comp, version string, src profiles.Source, files artifacts.Files) Part {
	files, err := files.Hashed()
	if err != nil {
		panic(err)
	}
	return Part{Part: lock.Part{Role: role, Artifact: lock.Artifact{Component: comp, Version: version, Source: src}}, Files: files}
}

// stack builds a stack whose binaries are real files in dir.
func stack(t *testing.T, dir string) Stack {
	bin := func(name string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("#!"+name), 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cni := filepath.Join(dir, "cni")
	_ = os.MkdirAll(cni, 0o755)
	_ = os.WriteFile(filepath.Join(cni, "bridge"), []byte("bridge"), 0o755)
	return Stack{
		Parts: []Part{
			part(profiles.RoleCRIO, "cri-o", "1.34.0", profiles.SourceGoMod, artifacts.Files{Binaries: map[string]string{"crio": bin("crio"), "pinns": bin("pinns")}}),
			part(profiles.RoleCRITools, "cri-tools", "1.34.0", profiles.SourceGoMod, artifacts.Files{Binaries: map[string]string{"crictl": bin("crictl")}}),
			part(profiles.RoleRuntime, "crun", "1.21", profiles.FileSource(dir+"/crun"), artifacts.Files{Binaries: map[string]string{"crun": bin("crun")}}),
			part(profiles.RoleConmon, "conmon", "2.1.6", profiles.SourcePackage, artifacts.Files{InGuest: true}),
			part(profiles.RoleCNI, "cni-plugins", "1.1.1", profiles.SourceBundle, artifacts.Files{Dir: cni}),
		},
		PauseImage: "localhost:5000/envctl/pause:v1", RegistryHost: "localhost:5000",
	}
}

func TestConfigPinsRuntimeByPath(t *testing.T) {
	s := stack(t, t.TempDir())
	cfg, err := s.Config()
	if err != nil {
		t.Fatal(err)
	}
	var doc crioDropIn
	if err := toml.Unmarshal([]byte(cfg), &doc); err != nil {
		t.Fatalf("drop-in does not parse back: %v\n%s", err, cfg)
	}
	rt := doc.Crio.Runtime
	h := rt.Runtimes["crun"]
	if rt.DefaultRuntime != "crun" || h.RuntimePath != "/usr/local/bin/crun" || h.MonitorPath != "/usr/bin/conmon" || rt.CgroupManager != "systemd" || rt.PinnsPath != "/usr/local/bin/pinns" {
		t.Errorf("runtime table %+v", rt)
	}
	if doc.Crio.Image.PauseImage != "localhost:5000/envctl/pause:v1" || doc.Crio.API.Listen != Socket || doc.Crio.StorageDriver != "overlay" {
		t.Errorf("drop-in %+v", doc.Crio)
	}
	for _, want := range []string{"[crio.runtime.runtimes.crun]", "[crio.image]"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("drop-in lacks %s:\n%s", want, cfg)
		}
	}
}

func dial(t *testing.T) (*guesttest.Server, *guest.Client) { return guesttest.Connect(t) }

// startingGuest is a guest whose CRI-O answers on the socket from the
// ready-th `crictl info` on; calls counts them.
func startingGuest(t *testing.T, ready int) (srv *guesttest.Server, c *guest.Client, s Stack, calls *int) {
	srv, c = dial(t)
	s = stack(t, t.TempDir())
	srv.Reply(`^udevadm control`, guesttest.Reply{})
	srv.Reply(`^systemctl start crio$`, guesttest.Reply{})
	calls = new(int)
	srv.Handle(`^crictl info`, func(string, []string) guesttest.Reply {
		if *calls++; *calls < ready {
			return guesttest.Reply{Stderr: "connect: no such file", Exit: 1}
		}
		return guesttest.Reply{Stdout: "ready\n"}
	})
	return srv, c, s, calls
}

func TestInstall(t *testing.T) {
	srv, c, s, _ := startingGuest(t, 2)
	tm, err := Install(context.Background(), c, s)
	if err != nil {
		t.Fatal(err)
	}
	if tm.Upload <= 0 || tm.Start <= 0 {
		t.Errorf("timings %+v", tm)
	}
	for _, p := range []string{"/usr/local/bin/crio", "/usr/local/bin/pinns", "/usr/local/bin/crictl", "/usr/local/bin/crun", "/opt/cni/bin/bridge", ConfigPath, "/etc/crictl.yaml", "/etc/containers/registries.conf", "/etc/systemd/system/crio.service"} {
		if _, err := srv.ReadFile(p); err != nil {
			t.Errorf("guest lacks %s", p)
		}
	}
	if _, err := srv.ReadFile("/usr/local/bin/conmon"); err == nil {
		t.Error("uploaded conmon, which comes from the guest's package")
	}
	reg, _ := srv.ReadFile("/etc/containers/registries.conf")
	if !strings.Contains(string(reg), `location = "localhost:5000"`) {
		t.Errorf("registries.conf %s", reg)
	}
}

// Poll sets how often CRI-O's socket is asked: 30 tries that fail take
// 30 s at the default second, and well under it at KVM's pace.
func TestInstallPoll(t *testing.T) {
	_, c, s, calls := startingGuest(t, 30)
	s.Poll = 5 * time.Millisecond
	tm, err := Install(context.Background(), c, s)
	if err != nil || tm.Start > 10*time.Second || *calls != 30 {
		t.Errorf("start took %s over %d tries: %v", tm.Start, *calls, err)
	}
}

func TestInstallFailures(t *testing.T) {
	t.Run("CRI-O does not start", func(t *testing.T) {
		srv, c := dial(t)
		srv.Reply(`^udevadm`, guesttest.Reply{})
		srv.Reply(`^systemctl start crio$`, guesttest.Reply{Stderr: "Job for crio.service failed", Exit: 1})
		srv.Reply(`^journalctl -u crio`, guesttest.Reply{Stdout: "level=fatal msg=\"bad config\"\n"})
		_, err := Install(context.Background(), c, stack(t, t.TempDir()))
		if !fault.Is(err, fault.Infra) || !strings.Contains(err.Error(), "CRI-O did not start") || !strings.Contains(err.Error(), "bad config") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("socket never answers", func(t *testing.T) {
		old := StartTimeout
		StartTimeout = 1500 * time.Millisecond
		defer func() { StartTimeout = old }()
		srv, c := dial(t)
		srv.Reply(`^udevadm`, guesttest.Reply{})
		srv.Reply(`^systemctl start crio$`, guesttest.Reply{})
		srv.Reply(`^crictl info`, guesttest.Reply{Exit: 1})
		_, err := Install(context.Background(), c, stack(t, t.TempDir()))
		if !fault.Is(err, fault.Infra) || !strings.Contains(err.Error(), "did not answer within") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("configure fails", func(t *testing.T) {
		srv, c := dial(t)
		srv.Reply(`^udevadm`, guesttest.Reply{Stderr: "modprobe: FATAL", Exit: 1})
		_, err := Install(context.Background(), c, stack(t, t.TempDir()))
		if !fault.Is(err, fault.Infra) || !strings.Contains(err.Error(), "modprobe: FATAL") {
			t.Errorf("err %v", err)
		}
	})
	t.Run("a binary is missing from the files", func(t *testing.T) {
		_, c := dial(t)
		s := stack(t, t.TempDir())
		delete(s.Parts[0].Files.Binaries, "pinns")
		if _, err := Install(context.Background(), c, s); err == nil || !strings.Contains(err.Error(), "no pinns") {
			t.Errorf("err %v", err)
		}
	})
}

// installed puts the stack's files into the guest as Install would.
func installed(t *testing.T, srv *guesttest.Server, s Stack) {
	t.Helper()
	ups, err := s.Uploads()
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range ups {
		b, _ := os.ReadFile(u.Local)
		if err := srv.WriteFile(u.Remote, b); err != nil {
			t.Fatal(err)
		}
	}
}

// splitBatch recognises the one round trip of a drift check.
var splitBatch = guest.SplitBatchScript

// verifyReplies are a guest's answers when it runs what the lock pins.
var verifyReplies = map[string]string{
	`^/usr/local/bin/crio --version$`:             "crio version 1.34.0\n",
	`^/usr/local/bin/crictl --version$`:           "crictl version v1.34.0\n",
	`^/usr/local/bin/crun --version$`:             "crun version 1.21\ncommit: x\n",
	`^dpkg-query -W -f '\$\{Version\}' 'conmon'$`: "2.1.6+ds1-1",
	`^/opt/cni/bin/bridge --version$`:             "CNI bridge plugin v1.1.1\n",
	`^crictl version$`:                            "Version:  0.1.0\nRuntimeName:  cri-o\nRuntimeVersion:  1.34.0\nRuntimeApiVersion:  v1\n",
}

func TestVerify(t *testing.T) {
	guest := func(t *testing.T) (*guesttest.Server, *guest.Client, Stack) {
		srv, c := dial(t)
		for re, out := range verifyReplies {
			srv.Reply(re, guesttest.Reply{Stdout: out})
		}
		s := stack(t, t.TempDir())
		installed(t, srv, s)
		return srv, c, s
	}
	t.Run("all match", func(t *testing.T) {
		srv, c, s := guest(t)
		got, err := Verify(context.Background(), c, s, ProofDigests)
		if err != nil {
			t.Fatal(err)
		}
		// One round trip: one batch holding the digests and every version.
		batches, hashed := 0, false
		for _, cmd := range srv.Commands() {
			if _, _, ok := splitBatch(cmd); ok {
				batches++
			}
			hashed = hashed || strings.HasPrefix(cmd, "sha256sum ")
		}
		if batches != 1 || !hashed {
			t.Errorf("%d batches, hashed %v: %q", batches, hashed, srv.Commands())
		}
		if len(got) != 5 {
			t.Fatalf("verified %d", len(got))
		}
		for _, it := range got {
			if !it.OK {
				t.Errorf("%s: %q vs %q", it.Component, it.Actual, it.Locked)
			}
		}
		if got[0].Running != "1.34.0" {
			t.Errorf("CRI-O's running version %q", got[0].Running)
		}
	})
	tests := []struct {
		name  string
		tweak func(srv *guesttest.Server, s *Stack)
		want  []string
	}{
		{"prerelease is not the release", func(srv *guesttest.Server, _ *Stack) {
			srv.Reply(`^/usr/local/bin/crio --version$`, guesttest.Reply{Stdout: "crio version 1.34.0-rc.1\n"})
		}, []string{`cri-o: locked 1.34.0, installed "1.34.0-rc.1"`}},
		{"missing binary", func(srv *guesttest.Server, _ *Stack) {
			srv.Reply(`^/usr/local/bin/crictl --version$`, guesttest.Reply{Stderr: "crictl: not found", Exit: 127})
		}, []string{`cri-tools: locked 1.34.0, installed "(crictl: not found)"`}},
		{"binary replaced after install, same version output", func(srv *guesttest.Server, s *Stack) {
			_ = srv.WriteFile("/usr/local/bin/crictl", []byte("another crictl"))
		}, []string{"cri-tools: /usr/local/bin/crictl has sha256 " + sha("another crictl") + ", the lock has " + sha("#!crictl")}},
		{"the lock's digest differs from the file", func(_ *guesttest.Server, s *Stack) {
			s.Parts[2].Binaries = map[string]string{"crun": sha("locked crun")}
		}, []string{"crun: /usr/local/bin/crun has sha256 " + sha("#!crun") + ", the lock has " + sha("locked crun")}},
		{"built from another commit than the lock's", func(srv *guesttest.Server, s *Stack) {
			s.Parts[0].Origin = &lock.Origin{Commit: "5dd0877c91adb0d2b253f8009d12bb6531ca0104"}
			srv.Reply(`^/usr/local/bin/crio --version$`, guesttest.Reply{Stdout: "crio version 1.34.0\n   GitCommit:      d91a449706dbbd6c285e4d365bbd3b65fd8de43c\n"})
		}, []string{"cri-o: locked commit 5dd0877c91adb0d2b253f8009d12bb6531ca0104, the binary reports d91a449706dbbd6c285e4d365bbd3b65fd8de43c"}},
		{"running daemon is another version", func(srv *guesttest.Server, _ *Stack) {
			srv.Reply(`^crictl version$`, guesttest.Reply{Stdout: "RuntimeName:  cri-o\nRuntimeVersion:  1.34.0-rc.1\n"})
		}, []string{`cri-o: the running daemon reports RuntimeVersion "1.34.0-rc.1" through CRI, locked 1.34.0`}},
		{"daemon does not answer", func(srv *guesttest.Server, _ *Stack) {
			srv.Reply(`^crictl version$`, guesttest.Reply{Stderr: "connect: connection refused", Exit: 1})
		}, []string{"RuntimeVersion \"(`crictl version` answered: connect: connection refused)\""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, c, s := guest(t)
			tt.tweak(srv, &s)
			_, err := Verify(context.Background(), c, s, ProofDigests)
			var drift *DriftError
			if !errors.As(err, &drift) || fault.ClassOf(err) != fault.Infra || len(drift.Items) != 1 {
				t.Fatalf("err %v", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
}

func sha(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// A package name from the catalog is quoted in the guest's shell.
func TestVersionCommandQuotes(t *testing.T) {
	comp := &catalog.Component{Name: "conmon", Package: "conmon'; touch /pwned; echo '"}
	got := VersionCommand(comp, profiles.SourcePackage)
	want := "dpkg-query -W -f '${Version}' " + guest.Quote(comp.Package)
	if got != want || !strings.HasSuffix(got, `'conmon'\''; touch /pwned; echo '\'''`) {
		t.Errorf("unquoted: %s", got)
	}
}

func TestParseCommit(t *testing.T) {
	tests := map[string]string{
		"crio version 1.34.0\n   GitCommit:      5dd0877c91adb0d2b253f8009d12bb6531ca0104\n": "5dd0877c91adb0d2b253f8009d12bb6531ca0104",
		"crio version 1.34.0\n   GitCommit:      unknown\n":                                  "",
		"runc version 1.3.6\ncommit: 5dd0877c91ad\nspec: 1.2.1\n":                            "5dd0877c91ad",
		"runc version 1.1.12\ncommit: v1.1.12-0-g51d5e946\nspec: 1.0.2-dev\n":                "51d5e946",
		"crictl version v1.34.0+3be3a295d72c\n":                                              "3be3a295d72c",
		"crictl version v1.34.0\n":                                                           "",
		"crun version 1.8.1\ncommit: f8a096be060b22ccd3d5f3ebe44108517fbf6c30\n":             "f8a096be060b22ccd3d5f3ebe44108517fbf6c30",
	}
	for in, want := range tests {
		if got := ParseCommit(in); got != want {
			t.Errorf("ParseCommit(%q) = %q, want %q", in, got, want)
		}
	}
}

// A runtime from the guest's package is the package's binary.
func TestConfigPackageRuntime(t *testing.T) {
	s := stack(t, t.TempDir())
	s.Parts[2] = part(profiles.RoleRuntime, "crun", "1.21", profiles.SourcePackage, artifacts.Files{InGuest: true})
	cfg, err := s.Config()
	if err != nil || !strings.Contains(cfg, `runtime_path = '/usr/bin/crun'`) {
		t.Errorf("config %v:\n%s", err, cfg)
	}
}

// verifyGuest is a guest with s installed that answers the drift check.
func verifyGuest(t *testing.T, s Stack) (*guesttest.Server, *guest.Client) {
	srv, c := dial(t)
	for re, out := range verifyReplies {
		srv.Reply(re, guesttest.Reply{Stdout: out})
	}
	installed(t, srv, s)
	return srv, c
}

// After a warm restore the seal proves the files: the drift check hashes
// nothing, and still asks every version and CRI.
func TestVerifyBySeal(t *testing.T) {
	s := stack(t, t.TempDir())
	srv, c := verifyGuest(t, s)
	_ = srv.WriteFile("/usr/local/bin/crictl", []byte("another crictl")) // not looked at
	got, err := Verify(context.Background(), c, s, ProofSeal)
	if err != nil || len(got) != 5 {
		t.Fatalf("%d verified, err %v", len(got), err)
	}
	for _, cmd := range srv.Commands() {
		if strings.HasPrefix(cmd, "sha256sum") {
			t.Errorf("the seal proves the files, yet %q ran", cmd)
		}
	}
	srv.Reply(`^crictl version$`, guesttest.Reply{Stdout: "RuntimeName:  cri-o\nRuntimeVersion:  1.34.0-rc.1\n"})
	if _, err := Verify(context.Background(), c, s, ProofSeal); err == nil || !strings.Contains(err.Error(), "RuntimeVersion") {
		t.Errorf("a wrong running version passed with the seal: %v", err)
	}
}

// A warm state that carries the drift check it passed before it was
// saved: versions come from that record, only the running CRI-O is asked,
// and a part the record does not answer for (another version, a failed
// check) is asked in the guest.
func TestVerifyBySealRecord(t *testing.T) {
	s := stack(t, t.TempDir())
	_, c := verifyGuest(t, s)
	record, err := Verify(context.Background(), c, s, ProofDigests)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		edit   func(rec []Installed) // the record as sealed
		cri    string                // what `crictl version` answers
		asked  int                   // version commands run in the guest
		failed bool
	}{
		{name: "every part recorded: only CRI is asked", edit: func([]Installed) {}, asked: 0},
		{name: "a part recorded at another version is asked", edit: func(rec []Installed) { rec[2].Locked = "0.9" }, asked: 1},
		{name: "a part whose check failed is asked", edit: func(rec []Installed) { rec[1].OK = false }, asked: 1},
		{name: "the running CRI-O is still asked", edit: func([]Installed) {},
			cri: "RuntimeName:  cri-o\nRuntimeVersion:  1.34.0-rc.1\n", failed: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv, c := verifyGuest(t, s)
			if tt.cri != "" {
				srv.Reply(`^crictl version$`, guesttest.Reply{Stdout: tt.cri})
			}
			rec := append([]Installed(nil), record...)
			tt.edit(rec)
			got, err := Verify(context.Background(), c, s, ProofSealRecord, rec...)
			if (err != nil) != tt.failed || len(got) != len(record) {
				t.Fatalf("%d verified, err %v", len(got), err)
			}
			asked, cri := 0, 0
			for _, cmd := range srv.Commands() {
				switch {
				case strings.Contains(cmd, "\n"): // the batch; its commands follow
				case strings.Contains(cmd, "sha256sum"):
					t.Errorf("the seal proves the files, yet %q ran", cmd)
				case cmd == "crictl version":
					cri++
				default:
					asked++
				}
			}
			if cri != 1 || asked != tt.asked {
				t.Errorf("asked %d version commands and CRI %d times, want %d and 1:\n%s", asked, cri, tt.asked, strings.Join(srv.Commands(), "\n"))
			}
			for k, it := range got {
				if !tt.failed && (it.Actual != record[k].Actual || it.Commit != record[k].Commit || !it.OK) {
					t.Errorf("%s: got %+v, want the record's %+v", it.Component, it, record[k])
				}
			}
		})
	}
	// Without ProofSealRecord a record is not used.
	srv2, c2 := verifyGuest(t, s)
	if _, err := Verify(context.Background(), c2, s, ProofSeal, record...); err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(strings.Join(srv2.Commands(), "\n"), "dpkg-query"); n == 0 {
		t.Errorf("ProofSeal used the record: no version command ran:\n%s", strings.Join(srv2.Commands(), "\n"))
	}
}
