package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/envctl/envctl/profiles/base/fault"
)

// TestExitCodes runs the CLI in-process on bad input: each case must exit
// with the documented code and a one-line error, never a panic.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.yaml")
	_ = os.WriteFile(bad, []byte("name: x\nvm: {memroy: 1GiB}\n"), 0o644)
	unlocked := filepath.Join(dir, "unlocked.yaml")
	src, _ := os.ReadFile("../../profiles/crio-1.34-runc.yaml")
	_ = os.WriteFile(unlocked, src, 0o644)
	garbled := filepath.Join(dir, "garbled.yaml")
	_ = os.WriteFile(garbled, src, 0o644)
	committed, _ := os.ReadFile("../../profiles/crio-1.34-runc.lock")
	_ = os.WriteFile(filepath.Join(dir, "garbled.lock"), []byte(regexp.MustCompile(`(?m)^  digest: sha256:[0-9a-f]+$`).ReplaceAllString(string(committed), "  digest: sha256:../../../../etc")), 0o644)
	t.Chdir("../..")
	t.Setenv("ENVCTL_STATE_DIR", filepath.Join(dir, "state"))
	t.Setenv("ENVCTL_CACHE_DIR", filepath.Join(dir, "cache"))
	setConfigHome(t, filepath.Join(dir, "config"))
	tests := []struct {
		args []string
		code int
		out  string // on stdout
		err  string // on stderr
	}{
		{[]string{"version"}, 0, "envctl", ""},
		{[]string{"catalog", "cri-tools"}, 0, "1.30.0", ""},
		{[]string{"show", "crio-1.34-runc"}, 0, "runc", ""},
		{[]string{"show", "crictl-matrix", "-o", "json"}, 0, `"cells"`, ""},
		{[]string{"plan", "seed-crictl-1.30"}, 0, "WARNING: crictl v1.30.0 does not send CRI Mount.image", ""},
		{[]string{"plan", "crio-1.34-crun-1.8.1"}, 0, "WARNING: crun v1.8.1 accepts only OCI runtime spec 1.0.x", ""},
		{[]string{"profiles"}, 0, "crio-1.34-runc", ""},
		{[]string{"status"}, 0, "no environments", ""},
		{[]string{"frobnicate"}, 2, "", `unknown command "frobnicate"`},
		{[]string{"show", "--bogus", "x"}, 2, "", "unknown flag"},
		{[]string{"show"}, 2, "", "exactly one PROFILE"},
		{[]string{"show", "crio-1.34-runx"}, 2, "", `did you mean "crio-1.34-runc"`},
		{[]string{"show", bad}, 2, "", `did you mean "memory"`},
		{[]string{"show", "crio-1.34-runc", "-o", "xml"}, 2, "", "not an output format"},
		{[]string{"catalog", "dockerd"}, 2, "", "unknown component"},
		{[]string{"up", bad}, 2, "", "memroy"},
		{[]string{"up", "crictl-matrix"}, 2, "", "the matrix has 8 cells"},
		{[]string{"up", "crio-1.34-runc", "--accel", "hvf"}, 2, "", `invalid argument "hvf" for "--accel"`},
		{[]string{"up", "crio-1.34-runc", "--network", "bridge"}, 2, "", "not a valid network"},
		{[]string{"up", "crio-1.34-runc", "--cloud-init", "maybe"}, 2, "", "cloud-init mode"},
		{[]string{"up", "crio-1.34-runc", "--test-images", "docker"}, 2, "", "test image source"},
		{[]string{"up", "crio-1.34-runc", "--boot-timeout", "-1s"}, 2, "", "--boot-timeout"},
		{[]string{"up", unlocked, "--locked"}, 2, "", "has no lock file"},
		{[]string{"plan", garbled}, 2, "", `image.digest: "sha256:../../../../etc" is not a digest`},
		{[]string{"up", garbled}, 2, "", `image.digest: "sha256:../../../../etc" is not a digest`},
		{[]string{"down", "no-such-env"}, 2, "", "no environment"},
		{[]string{"ssh", "no-such-env", "--", "true"}, 2, "", "no environment"},
		{[]string{"image", "pull", "plan9"}, 2, "", "not a catalog image"},
		{[]string{"image", "pull", "crio-1.34-runc"}, 2, "", "needs an image store"},
		{[]string{"image", "pull", "crio-1.34-runc", "--image-store", "127.0.0.1:1/x@sha256:00"}, 2, "", "is not a registry repository"},
		{[]string{"image", "push", "debian-12"}, 2, "", "needs an image store"},
		{[]string{"image", "push", "debian-12", "--image-store", "envctl/images"}, 2, "", "write HOST[:PORT]/PATH"},
		{[]string{"image", "pull", "crio-1.34-runc", "--image-store", "ftp://h/x"}, 2, "", "write HOST[:PORT]/PATH"},
		{[]string{"image", "pull", "myorg/x:v1"}, 2, "", "write HOST[:PORT]/PATH:TAG"},
		{[]string{"image", "push", "127.0.0.1:1/envctl", "plan9"}, 2, "", "neither a local build"},
		{[]string{"image", "import", "/nonexistent.tar"}, 2, "", "/nonexistent.tar"},
		{[]string{"image", "build", "debian-12", "--snapshot", "yesterday"}, 2, "", "not a snapshot timestamp"},
		{[]string{"image", "build", "debian-12", "--mirror", "ftp://example.invalid/debian"}, 2, "", "use an http://, https:// or file:/// URL"},
		{[]string{"image", "rm", "plan9"}, 2, "", "no local build"},
		{[]string{"image", "build", "plan9"}, 2, "", "no local build recipe"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(tt.args, &out, &errb)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tt.code, errb.String())
			}
			if tt.out != "" && !strings.Contains(out.String(), tt.out) {
				t.Errorf("stdout lacks %q:\n%s", tt.out, out.String())
			}
			msg := errb.String()
			if tt.err != "" && !strings.Contains(msg, tt.err) {
				t.Errorf("stderr %q lacks %q", msg, tt.err)
			}
			if tt.code != 0 && strings.Count(strings.TrimSpace(msg), "\n") > 0 && !strings.HasPrefix(msg, "==>") {
				t.Errorf("error is not one line: %q", msg)
			}
			if strings.Contains(msg, "goroutine ") || strings.Contains(msg, "panic") {
				t.Errorf("stack trace: %s", msg)
			}
		})
	}
	// A corrupt local image registry is an infrastructure error (exit 3),
	// never reclassified as bad input.
	reg := filepath.Join(dir, "cache", "images")
	_ = os.MkdirAll(reg, 0o755)
	_ = os.WriteFile(filepath.Join(reg, "local.json"), []byte("{"), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"lock", unlocked}, &out, &errb); code != 3 || !strings.Contains(errb.String(), "corrupt") {
		t.Errorf("corrupt registry: exit %d %s", code, errb.String())
	}
	// `up --locked` on an unlocked profile wrote nothing.
	if _, err := os.Stat(filepath.Join(dir, "unlocked.lock")); err == nil {
		t.Error("--locked wrote a lock")
	}
}

func TestExitCodeMapping(t *testing.T) {
	tests := []struct {
		err  error
		code int
	}{
		{nil, 0},
		{errors.New("unclassified"), 3},
		{fault.Inputf("bad"), 2},
		{fault.Infraf("down"), 3},
		{&shown{class: fault.TestFailed}, 1},
		{&remoteExit{status: 7}, 7},
		{errors.New("write /dev/full: invalid argument"), 3},
	}
	for _, tt := range tests {
		if got := exitCode(tt.err); got != tt.code {
			t.Errorf("exitCode(%v) = %d, want %d", tt.err, got, tt.code)
		}
	}
}

func TestConfigurationGivesFlagDefaults(t *testing.T) {
	dir := t.TempDir()
	setConfigHome(t, dir)
	t.Setenv("ENVCTL_STATE_DIR", filepath.Join(dir, "state"))
	_ = os.MkdirAll(filepath.Join(dir, "envctl"), 0o755)
	_ = os.WriteFile(filepath.Join(dir, "envctl", "config.yaml"), []byte("output: json\n"), 0o644)
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || !strings.Contains(out.String(), `"version"`) {
		t.Errorf("config output: json ignored: %d %s %s", code, out.String(), errb.String())
	}
	_ = os.WriteFile(filepath.Join(dir, "envctl", "config.yaml"), []byte("output: xml\n"), 0o644)
	out.Reset()
	errb.Reset()
	if code := run([]string{"version"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "--output from the configuration") {
		t.Errorf("bad config value: %d %s", code, errb.String())
	}
	_ = os.WriteFile(filepath.Join(dir, "envctl", "config.yaml"), []byte("output: [\n"), 0o644)
	errb.Reset()
	if code := run([]string{"version"}, &out, &errb); code != 2 || !strings.Contains(errb.String(), "config.yaml") {
		t.Errorf("broken config: %d %s", code, errb.String())
	}
}

// image_store (or image-store) in config.yaml and ENVCTL_IMAGE_STORE give
// --image-store; debian_mirror gives `image build --mirror`, never the
// components' ENVCTL_MIRROR. A bad value names where it came from.
func TestImageSettingsFromTheConfiguration(t *testing.T) {
	tests := []struct {
		name, config string
		env          map[string]string
		args         []string
		want         string
	}{
		{"config underscore", "image_store: 127.0.0.1:1/a@b\n", nil, []string{"image", "pull", "crio-1.34-runc"}, "image store \"127.0.0.1:1/a@b\" is not a registry repository"},
		{"config dash", "image-store: 127.0.0.1:1/a@b\n", nil, []string{"image", "pull", "crio-1.34-runc"}, "is not a registry repository"},
		{"environment", "", map[string]string{"ENVCTL_IMAGE_STORE": "127.0.0.1:1/a@b"}, []string{"image", "pull", "crio-1.34-runc"}, "is not a registry repository"},
		{"debian mirror", "debian_mirror: ftp://example.invalid\n", map[string]string{"ENVCTL_MIRROR": "file:///components"}, []string{"image", "build", "debian-12"}, "--mirror: mirror ftp://example.invalid"},
		{"debian mirror from the environment", "", map[string]string{"ENVCTL_DEBIAN_MIRROR": "ftp://example.invalid"}, []string{"image", "build", "debian-12"}, "mirror ftp://example.invalid"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			t.Chdir("../..")
			setConfigHome(t, dir)
			t.Setenv("ENVCTL_CACHE_DIR", filepath.Join(dir, "cache"))
			t.Setenv("ENVCTL_STATE_DIR", filepath.Join(dir, "state"))
			for k, v := range tt.env {
				t.Setenv(k, v)
			}
			_ = os.MkdirAll(filepath.Join(dir, "envctl"), 0o755)
			_ = os.WriteFile(filepath.Join(dir, "envctl", "config.yaml"), []byte(tt.config), 0o644)
			var out, errb bytes.Buffer
			code := run(tt.args, &out, &errb)
			if code != 2 || !strings.Contains(errb.String(), tt.want) {
				t.Errorf("exit %d, stderr %q, want exit 2 with %q", code, errb.String(), tt.want)
			}
		})
	}
}
