package crio

import (
	"strings"
	"testing"

	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artifacts"
)

func TestParseVersion(t *testing.T) {
	tests := map[string]string{
		"crio version 1.34.0\nGitCommit: abc\n":                         "1.34.0",
		"crictl version v1.30.0\n":                                      "1.30.0",
		"runc version 1.3.6\ncommit: v1.3.6-0\nspec: 1.2.1\ngo: go1.26": "1.3.6",
		"crun version 1.8.1\ncommit: 1234\nspec: 1.0.0\n+SYSTEMD":       "1.8.1",
		"conmon version 2.1.6\ncommit: unknown\n":                       "2.1.6",
		"2.1.6+ds1-1":                   "2.1.6",
		"1.1.1+ds1-3+b17":               "1.1.1",
		"bash: crio: command not found": "",
	}
	for in, want := range tests {
		if got := ParseVersion(in); got != want {
			t.Errorf("ParseVersion(%q) = %q, want %q", in, got, want)
		}
	}
	if !sameVersion("1.8", "1.8.0") || !sameVersion("v1.34.0", "1.34.0") || sameVersion("1.30.0", "1.34.0") {
		t.Error("sameVersion")
	}
}

func TestConfigPinsRuntimeByPath(t *testing.T) {
	s := Stack{
		Artifacts:  map[string]lock.Artifact{"runtime": {Component: "crun", Version: "1.8.1"}, "conmon": {Component: "conmon", Source: "package"}},
		Files:      map[string]artifacts.Files{"runtime": {Binaries: map[string]string{"crun": "/x/crun"}}, "conmon": {InGuest: true}},
		PauseImage: "localhost:5000/envctl/pause:v1",
	}
	uploads, conmon, dirs := s.paths()
	if uploads["/x/crun"] != "/usr/local/bin/crun" || conmon != "/usr/bin/conmon" {
		t.Errorf("paths %v %s", uploads, conmon)
	}
	cfg := s.Config(conmon, dirs)
	for _, want := range []string{`default_runtime = "crun"`, `[crio.runtime.runtimes.crun]`, `runtime_path = "/usr/local/bin/crun"`, `monitor_path = "/usr/bin/conmon"`, `pause_image = "localhost:5000/envctl/pause:v1"`, `cgroup_manager = "systemd"`, `pinns_path = "/usr/local/bin/pinns"`} {
		if !strings.Contains(cfg, want) {
			t.Errorf("config lacks %s\n%s", want, cfg)
		}
	}
}

func TestDriftError(t *testing.T) {
	e := &DriftError{Items: []Installed{{Component: "cri-tools", Locked: "1.34.0", Actual: "1.30.0", Command: "crictl --version"}}}
	for _, want := range []string{"drift", "cri-tools", "locked 1.34.0", `installed "1.30.0"`} {
		if !strings.Contains(e.Error(), want) {
			t.Errorf("%q lacks %q", e.Error(), want)
		}
	}
}
