package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/envctl/envctl/provision/env"
)

// cli runs envctl in-process in dir (a directory with no ./profiles unless
// the test makes one), with a cache, state and config of its own.
func cli(t *testing.T, _ string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errb bytes.Buffer
	code = run(args, &out, &errb)
	return out.String(), errb.String(), code
}

// isolate gives a test a working directory without profiles and a
// cache, state and config directory of its own.
func isolate(t *testing.T) (dir, config string) {
	dir = isolatedDir(t)
	work := filepath.Join(dir, "work")
	config = filepath.Join(dir, "config")
	_ = os.MkdirAll(work, 0o755)
	t.Chdir(work)
	setConfigHome(t, config)
	t.Setenv("ENVCTL_CACHE_DIR", filepath.Join(dir, "cache"))
	t.Setenv("ENVCTL_STATE_DIR", filepath.Join(dir, "state"))
	t.Setenv("ENVCTL_PROFILES_DIR", "")
	return work, config
}

// setConfigHome points XDG_CONFIG_HOME at dir with Go's telemetry off in
// it. envctl runs the go command (go env, go list, go build); with telemetry
// on, go starts a detached child that writes dir/go/telemetry after the go
// command and the test have ended, and the test's directory cannot be
// removed ("unlinkat …: directory not empty", CI of 2026-12-07).
func setConfigHome(t *testing.T, dir string) {
	t.Helper()
	mode := filepath.Join(dir, "go", "telemetry", "mode")
	if err := os.MkdirAll(filepath.Dir(mode), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mode, []byte("off"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("XDG_CONFIG_HOME", dir)
}

// isolatedDir is a temporary directory that is removed after the test
// like t.TempDir's, but tried again when something appeared in it during
// the removal (seen once in CI under -race: "unlinkat …/001: directory
// not empty"); what appeared is logged, so that its writer can be found.
func isolatedDir(t *testing.T) string {
	dir, err := os.MkdirTemp("", "envctl-isolate-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		for i := 0; ; i++ {
			err := os.RemoveAll(dir)
			if err == nil {
				return
			}
			var left []string
			_ = filepath.WalkDir(dir, func(p string, _ os.DirEntry, _ error) error {
				left = append(left, p)
				return nil
			})
			t.Logf("removing %s: %v; still there: %v", dir, err, left)
			if i == 5 {
				t.Errorf("%s could not be removed: %v", dir, err)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
	})
	return dir
}

// After `go install`, in a directory without profiles: the built-in
// profiles are listed with their origin, and run by name.
func TestBuiltinProfiles(t *testing.T) {
	work, _ := isolate(t)
	out, errOut, code := cli(t, work, "profiles", "-o", "json")
	var list []struct{ Name, Origin string }
	if code != 0 || json.Unmarshal([]byte(out), &list) != nil || len(list) < 5 {
		t.Fatalf("profiles: exit %d %s %s", code, out, errOut)
	}
	for _, e := range list {
		if e.Origin != "built-in" {
			t.Errorf("%s: origin %q", e.Name, e.Origin)
		}
	}
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"show", "crio-1.34-runc"}, "runc"},
		{[]string{"plan", "seed-crictl-1.30"}, "WARNING: crictl v1.30.0 does not send CRI Mount.image"},
		{[]string{"show", "builtin:crictl-matrix"}, "cri-tools=1.37.0"},
		{[]string{"diff", "crio-1.34-runc", "seed-crictl-1.30"}, "cri-tools 1.34.0 → 1.30.0"},
	}
	for _, tt := range tests {
		if out, errOut, code := cli(t, work, tt.args...); code != 0 || !strings.Contains(out, tt.want) {
			t.Errorf("%v: exit %d, stdout lacks %q:\n%s%s", tt.args, code, tt.want, out, errOut)
		}
	}
	// The committed locks of two profiles: the one difference that
	// matters first, and exit 1 with --exit-code.
	if out, errOut, code := cli(t, work, "diff", "crio-1.34-runc", "seed-crictl-1.30", "--exit-code"); code != 1 || !strings.HasPrefix(out, "cri-tools 1.34.0 → 1.30.0\n") {
		t.Errorf("diff --exit-code: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := cli(t, work, "show", "builtin:nope"); code != 2 || !strings.Contains(errOut, "carries no such profile") {
		t.Errorf("builtin:nope: exit %d %s", code, errOut)
	}
	// The unpacked copy is read only: nobody edits the binary's profile.
	out, _, _ = cli(t, work, "plan", "crio-1.34-runc")
	if fi, err := os.Stat(filepath.Join(os.Getenv("ENVCTL_CACHE_DIR"), "profiles")); err != nil || !fi.IsDir() {
		t.Fatalf("no unpacked copy: %v\n%s", err, out)
	}
}

// init writes a profile and its lock under a new name; the copy pins what
// the original pinned, and a local file wins over the built-in one.
func TestInit(t *testing.T) {
	work, _ := isolate(t)
	if out, errOut, code := cli(t, work, "init", "my-stack"); code != 0 || !strings.Contains(out, "wrote profiles/my-stack.lock") {
		t.Fatalf("init: exit %d %s %s", code, out, errOut)
	}
	out, errOut, code := cli(t, work, "diff", "my-stack", "builtin:crio-1.34-runc", "--exit-code")
	if code != 0 || !strings.Contains(out, "pin the same environment") {
		t.Errorf("the copy pins something else: exit %d\n%s%s", code, out, errOut)
	}
	if _, errOut, code := cli(t, work, "init", "my-stack"); code != 2 || !strings.Contains(errOut, "exists already") {
		t.Errorf("init over a file: exit %d %s", code, errOut)
	}
	if _, errOut, code := cli(t, work, "init", "../x"); code != 2 || !strings.Contains(errOut, "not a valid profile name") {
		t.Errorf("init ../x: exit %d %s", code, errOut)
	}
	// A local crio-1.34-runc wins over the built-in one.
	if _, errOut, code := cli(t, work, "init", "crio-1.34-runc", "--from", "crio-1.34-crun"); code != 0 {
		t.Fatalf("init crio-1.34-runc: %s", errOut)
	}
	out, _, _ = cli(t, work, "show", "crio-1.34-runc")
	if !strings.Contains(out, "crun") || !strings.Contains(out, "profiles/crio-1.34-runc.yaml") {
		t.Errorf("the local file does not win:\n%s", out)
	}
	out, _, _ = cli(t, work, "profiles")
	if !strings.Contains(out, "./profiles") || strings.Count(out, "crio-1.34-runc ") != 1 {
		t.Errorf("profiles:\n%s", out)
	}
}

// A typo in config.yaml is refused, naming the key and the closest one.
func TestConfigTypos(t *testing.T) {
	tests := []struct{ config, want string }{
		{"acel: kvm\n", `unknown key "acel" (did you mean "accel"?)`},
		{"image_stor: 127.0.0.1:5000/x\n", `unknown key "image_stor" (did you mean "image-store"?)`},
		{"output: json\nimage_store: 127.0.0.1:5000/x\nprofiles-dir: /nonexistent\ndebian_mirror: http://127.0.0.1/debian\n", ""},
	}
	for _, tt := range tests {
		t.Run(tt.config, func(t *testing.T) {
			work, config := isolate(t)
			_ = os.MkdirAll(filepath.Join(config, "envctl"), 0o755)
			_ = os.WriteFile(filepath.Join(config, "envctl", "config.yaml"), []byte(tt.config), 0o644)
			_, errOut, code := cli(t, work, "version")
			if tt.want == "" && code != 0 || tt.want != "" && (code != 2 || !strings.Contains(errOut, tt.want) || !strings.Contains(errOut, "config.yaml")) {
				t.Errorf("exit %d %q, want %q", code, errOut, tt.want)
			}
		})
	}
}

// --version prints the version and commit; boolean flags take no value in
// their help (pflag reads a backticked word as a value name).
func TestVersionAndFlagHelp(t *testing.T) {
	work, _ := isolate(t)
	out, _, code := cli(t, work, "--version")
	if code != 0 || !strings.HasPrefix(out, "envctl ") || !strings.Contains(out, "commit") {
		t.Errorf("--version: %d %q", code, out)
	}
	a := newApp(&bytes.Buffer{}, &bytes.Buffer{})
	root := a.rootCmd()
	for _, c := range append(root.Commands(), root) {
		for _, sub := range append(c.Commands(), c) {
			sub.Flags().VisitAll(func(f *pflag.Flag) {
				if strings.Contains(f.Usage, "`") {
					t.Errorf("%s --%s: backtick in help %q", sub.CommandPath(), f.Name, f.Usage)
				}
				if name, _ := pflag.UnquoteUsage(f); f.Value.Type() == "bool" && name != "" {
					t.Errorf("%s --%s: a boolean flag shows a value %q", sub.CommandPath(), f.Name, name)
				}
			})
			if sub != root && sub.Parent() == root && sub.GroupID == "" && sub.Name() != "version" && sub.Name() != "help" && sub.Name() != "completion" {
				t.Errorf("%s is in no group", sub.Name())
			}
		}
	}
}

// JSON output: an empty list is [], and ~> is not escaped.
func TestJSONOutput(t *testing.T) {
	work, _ := isolate(t)
	out, _, code := cli(t, work, "status", "-o", "json")
	if code != 0 || strings.TrimSpace(out) != "[]" {
		t.Errorf("status -o json with no environments: %d %q", code, out)
	}
	out, _, _ = cli(t, work, "show", "crio-1.34-runc", "-o", "json")
	if strings.Contains(out, `\u003e`) || !strings.Contains(out, "~>") {
		t.Errorf("show -o json escapes ~>:\n%s", out)
	}
}

// Completion knows --test, --upload, --cell and image pull's profiles.
func TestCompletions(t *testing.T) {
	work, _ := isolate(t)
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"__complete", "up", "crio-1.34-runc", "--test", ""}, "upstream:oci_volumes.bats"},
		{[]string{"__complete", "up", "crio-1.34-runc", "--upload", ""}, "sftp"},
		{[]string{"__complete", "up", "crictl-matrix", "--cell", ""}, "cri-tools=1.37.0,runtime=crun@1.8.1"},
		{[]string{"__complete", "matrix", "crictl-matrix", "--cells", ""}, "cri-tools=1.30.0,runtime=runc@1.3.6"},
		{[]string{"__complete", "image", "pull", ""}, "seed-crictl-1.30"},
		{[]string{"__complete", "up", "crio-1.34-runc", "--keep="}, "on-failure"},
	}
	for _, tt := range tests {
		if out, errOut, _ := cli(t, work, tt.args...); !strings.Contains(out, tt.want) {
			t.Errorf("%v: lacks %q:\n%s%s", tt.args, tt.want, out, errOut)
		}
	}
}

// A long task's output goes to a log file behind a few plain lines (off a
// terminal), is shown whole when it fails, and -q keeps only that.
func TestTaskOutput(t *testing.T) {
	tests := []struct {
		name          string
		quiet, fail   bool
		want, notWant []string
	}{
		{"success", false, false, []string{"its output goes to", "image build x: done in"}, []string{"mmdebstrap says"}},
		{"failure shows the log", false, true, []string{"image build x: failed in", "image build x failed; its output", "mmdebstrap says"}, nil},
		{"quiet success says nothing", true, false, nil, []string{"==>"}},
		{"quiet failure shows the log", true, true, []string{"mmdebstrap says"}, []string{"its output goes to"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var errb bytes.Buffer
			a := newApp(&bytes.Buffer{}, &errb)
			a.cacheDir, a.quiet = t.TempDir(), tt.quiet
			w, done := a.task("image build x")
			fmt.Fprintln(w, "mmdebstrap says hello")
			var err error
			if tt.fail {
				err = errors.New("exit status 25")
			}
			done(err)
			done(err) // once only
			for _, s := range tt.want {
				if !strings.Contains(errb.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, errb.String())
				}
			}
			for _, s := range tt.notWant {
				if strings.Contains(errb.String(), s) {
					t.Errorf("stderr has %q:\n%s", s, errb.String())
				}
			}
			logs, _ := filepath.Glob(filepath.Join(a.cacheDir, "logs", "image-build-x-*.log"))
			if b, _ := os.ReadFile(logs[0]); len(logs) != 1 || !strings.Contains(string(b), "mmdebstrap says") {
				t.Errorf("log file %v: %q", logs, b)
			}
		})
	}
	var buf bytes.Buffer
	b := &boundedWriter{w: &buf, left: 4}
	if n, err := b.Write([]byte("abcdefgh")); n != 8 || err != nil || !strings.HasPrefix(buf.String(), "abcd") {
		t.Errorf("bounded: %d %v %q", n, err, buf.String())
	}
	_, _ = b.Write([]byte("more"))
	if strings.Count(buf.String(), "passed its limit") != 1 {
		t.Errorf("bounded: %q", buf.String())
	}
}

// ssh-config's block is one OpenSSH reads as meant: the port, the key, the
// pinned host key in its own known_hosts file, strict checking; a guest on
// a remote libvirt host goes through that host.
func TestSSHConfigBlock(t *testing.T) {
	tests := []struct {
		uri, jump string
	}{
		{"qemu:///system", ""},
		{"qemu+ssh://ci@build-7:2222/system?keyfile=/k", "ci@build-7:2222"},
	}
	for _, tt := range tests {
		dir := t.TempDir()
		e := &env.Env{ID: "crio-1-34-runc-f412a7", SSHHost: "127.0.0.1", SSHPort: 46755, User: "envctl", URI: tt.uri, Dir: dir,
			HostKey: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHyN2uZ0mF6H4Xq2c1m3nQz8Jc5yq0Yb9m7m6cQ1b2c3 envctl-host"}
		block, err := sshConfigBlock(e)
		if err != nil {
			t.Fatal(err)
		}
		known, _ := os.ReadFile(filepath.Join(dir, "known_hosts"))
		if !strings.HasPrefix(string(known), "envctl-crio-1-34-runc-f412a7 ssh-ed25519 ") {
			t.Errorf("known_hosts: %q", known)
		}
		for _, want := range []string{"Host envctl-crio-1-34-runc-f412a7\n", "Port 46755", "IdentityFile " + filepath.Join(dir, "id_ed25519"), "StrictHostKeyChecking yes"} {
			if !strings.Contains(block, want) {
				t.Errorf("block lacks %q:\n%s", want, block)
			}
		}
		if strings.Contains(block, "ProxyJump") != (tt.jump != "") || tt.jump != "" && !strings.Contains(block, "ProxyJump "+tt.jump) {
			t.Errorf("%s: block:\n%s", tt.uri, block)
		}
		if _, err := exec.LookPath("ssh"); err != nil {
			continue
		}
		cfg := filepath.Join(dir, "config")
		_ = os.WriteFile(cfg, []byte(block), 0o600)
		out, err := exec.Command("ssh", "-G", "-F", cfg, "envctl-crio-1-34-runc-f412a7").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "port 46755") || !strings.Contains(string(out), "hostname 127.0.0.1") ||
			!strings.Contains(string(out), "stricthostkeychecking true") {
			t.Errorf("OpenSSH reads the block otherwise: %v\n%s", err, out)
		}
	}
	if _, err := sshConfigBlock(&env.Env{ID: "x", Dir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "no SSH endpoint") {
		t.Errorf("an environment without SSH: %v", err)
	}
}

func TestSplitEnvPathAndLastLines(t *testing.T) {
	for _, tt := range []struct{ in, env, path string }{
		{"e1:/etc/crio", "e1", "/etc/crio"},
		{"./a:b", "", "./a:b"},
		{"/x:y", "", "/x:y"},
		{"file.txt", "", "file.txt"},
		{":/x", "", ":/x"},
	} {
		if e, p := splitEnvPath(tt.in); e != tt.env || p != tt.path {
			t.Errorf("splitEnvPath(%q) = %q, %q", tt.in, e, p)
		}
	}
	for _, tt := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc\n"},
		{"a\nb\nc", 2, "b\nc"},
		{"a\nb\n", 0, "a\nb\n"},
		{"a\n", 5, "a\n"},
	} {
		if got := string(lastLines([]byte(tt.in), tt.n)); got != tt.want {
			t.Errorf("lastLines(%q, %d) = %q", tt.in, tt.n, got)
		}
	}
}

// Every command shows an example in its --help.
func TestEveryCommandHasAnExample(t *testing.T) {
	root := newApp(&bytes.Buffer{}, &bytes.Buffer{}).rootCmd()
	eachCommand(root, func(sub *cobra.Command) {
		if sub == root || sub.Hidden || strings.HasPrefix(sub.CommandPath(), "envctl help") || strings.HasPrefix(sub.CommandPath(), "envctl completion") || strings.HasPrefix(sub.Name(), "__") {
			return
		}
		if sub.Runnable() && strings.TrimSpace(sub.Example) == "" {
			t.Errorf("%s has no example", sub.CommandPath())
		}
	})
}

// Progress through a (fake) terminal is one live line with the elapsed
// time; through a pipe, a plain line per period at most.
func TestTaskProgressOnATerminalAndAPipe(t *testing.T) {
	run := func(tty bool, every time.Duration, d time.Duration) string {
		var errb syncBuffer
		a := newApp(&bytes.Buffer{}, &errb)
		a.cacheDir, a.stillEvery = t.TempDir(), every
		a.terminal = func() bool { return tty }
		w, done := a.task("build runc 1.3.6")
		for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
			fmt.Fprintln(w, "go: downloading a module") // never shown
		}
		done(nil)
		return errb.String()
	}
	out := run(true, time.Minute, 1200*time.Millisecond)
	if !strings.Contains(out, "==> build runc 1.3.6") || !regexp.MustCompile(` [12]s\n`).MatchString(out) || strings.Contains(out, "go: downloading") {
		t.Errorf("terminal: no live line with the elapsed time, or the output leaked:\n%q", out)
	}
	out = run(false, 200*time.Millisecond, time.Second)
	n := strings.Count(out, "still running")
	if n < 2 || n > 6 || strings.Contains(out, "go: downloading") || !strings.Contains(out, "build runc 1.3.6: done in") {
		t.Errorf("pipe: %d still-running lines in 1s at one per 200ms (want 2 to 6):\n%s", n, out)
	}
}

// syncBuffer is a bytes.Buffer that several goroutines write.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// JSON: an object starts with schema_version (once), a list stays an
// array, nil is [], and nothing is HTML-escaped; docs/json.md lists every
// command.
func TestJSONShapes(t *testing.T) {
	tests := []struct {
		in   any
		want string
	}{
		{struct{ A string }{"~> 1"}, "{\n  \"schema_version\": 1,\n  \"A\": \"~> 1\"\n}\n"},
		{struct{}{}, "{\n  \"schema_version\": 1\n}\n"},
		{struct {
			V int `json:"schema_version"`
		}{7}, "{\n  \"schema_version\": 7\n}\n"},
		{[]string(nil), "[]\n"},
		{[]int{1}, "[\n  1\n]\n"},
	}
	for _, tt := range tests {
		b, err := jsonOutput(tt.in)
		if err != nil || string(b) != tt.want {
			t.Errorf("jsonOutput(%#v) = %q, %v; want %q", tt.in, b, err, tt.want)
		}
	}
}

func TestJSONDocumented(t *testing.T) {
	doc, err := os.ReadFile("../../docs/json.md")
	if err != nil {
		t.Fatal(err)
	}
	root := newApp(&bytes.Buffer{}, &bytes.Buffer{}).rootCmd()
	eachCommand(root, func(sub *cobra.Command) {
		if sub == root || sub.Hidden || sub.Name() == "help" || strings.HasPrefix(sub.Name(), "__") || sub.Parent() != nil && sub.Parent().Name() == "completion" {
			return
		}
		if sub.Runnable() || sub.Name() == "completion" {
			path := strings.TrimPrefix(sub.CommandPath(), "envctl ")
			if !strings.Contains(string(doc), "| `"+path+"` |") {
				t.Errorf("docs/json.md does not describe %q", path)
			}
		}
	})
}

// A transfer's bytes: a bar with byte counts on a terminal; through a
// pipe, a line at the start, one per period at most, and one at the end.
func TestTransferMeter(t *testing.T) {
	run := func(tty bool) string {
		var errb syncBuffer
		a := newApp(&bytes.Buffer{}, &errb)
		a.stillEvery = 300 * time.Millisecond
		a.terminal = func() bool { return tty }
		m := a.meter("push 127.0.0.1:5000/envctl:x")
		for i := int64(1); i <= 50; i++ {
			m.Set(i<<20, 50<<20)
			time.Sleep(20 * time.Millisecond)
		}
		m.Done(nil)
		return errb.String()
	}
	if out := run(true); !strings.Contains(out, "push 127.0.0.1:5000/envctl:x") || !strings.Contains(out, "MiB / ") {
		t.Errorf("terminal: no bar with byte counts:\n%q", out)
	}
	out := run(false)
	n := strings.Count(out, "==> ")
	if n < 3 || n > 7 || !strings.Contains(out, "done, 50.0 of 50.0 MiB") {
		t.Errorf("pipe: %d lines for 1s at one per 300ms (want 3 to 7):\n%s", n, out)
	}
}

// Every enum flag completes its values.
func TestEveryEnumFlagCompletes(t *testing.T) {
	root := newApp(&bytes.Buffer{}, &bytes.Buffer{}).rootCmd()
	n := 0
	eachCommand(root, func(c *cobra.Command) {
		c.LocalFlags().VisitAll(func(f *pflag.Flag) {
			_, enum := f.Value.(interface{ choices() []string })
			if !enum && f.Name != "keep" && f.Name != "test" && f.Name != "output" {
				return
			}
			n++
			if _, ok := c.GetFlagCompletionFunc(f.Name); !ok {
				if _, ok := root.GetFlagCompletionFunc(f.Name); !ok {
					t.Errorf("%s --%s does not complete", c.CommandPath(), f.Name)
				}
			}
		})
	})
	if n < 5 {
		t.Errorf("only %d enum flags seen", n)
	}
}
