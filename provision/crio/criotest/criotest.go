// Package criotest scripts a fake guest (guesttest.Server) to behave like
// a Debian VM with envctl's stack installed: systemd, CRI-O starting, the
// version answers of each binary, and a small stateful crictl with the
// failure modes the image-volume test must tell apart. The imagevolume and
// pipeline tests use it.
package criotest

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"sync"

	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/provision/guest/guesttest"
)

// Stack is the fake CRI-O stack in a guest.
type Stack struct {
	mu         sync.Mutex
	images     map[string]bool
	containers map[string]container // by ID
	n          int
	// DropsMount plays crictl < 1.31: the mount's image never reaches CRI-O,
	// which answers "mount.HostPath is empty".
	DropsMount bool
	// PullFails makes pulls of images whose name contains it fail.
	PullFails string
	// VolumeFile is what /volume/file holds ("2" upstream).
	VolumeFile string
	// RunningVersion, when set, is what the running CRI-O reports through
	// CRI, whatever binary is installed.
	RunningVersion string
	// WrongReasons makes every refusal the test expects happen for another
	// reason than CRI-O's (a failing step must then fail).
	WrongReasons bool
	// Deadman records the dead-man timer as envctl set it ("1200s") and
	// stopped it ("stopped"), in order.
	Deadman []string
	// log is what the fake crio logged (its journal).
	log []string
}

// refuse is a CRI error the fake crio logs and crictl prints.
func (s *Stack) refuse(msg string) guesttest.Reply {
	if s.WrongReasons {
		msg = "rpc error: code = Unavailable desc = connection error: transport is closing"
	}
	s.log = append(s.log, `level=error msg="`+msg+`"`)
	return guesttest.Reply{Stderr: `time="2026-11-30T00:00:00Z" level=fatal msg="` + msg + `"`, Exit: 1}
}

// Versions are the answers of the version commands, keyed by a regular
// expression of the command.
var Versions = map[string]string{
	`^/usr/local/bin/crio --version$`:                                  "crio version 1.34.0\nGitCommit: 5dd0877c\n",
	`^/usr/local/bin/crictl --version$`:                                "crictl version v1.34.0\n",
	`^/usr/local/bin/runc --version$`:                                  "runc version 1.3.6\ncommit: v1.3.6-0\nspec: 1.2.1\n",
	`^/usr/local/bin/crun --version$`:                                  "crun version 1.21\ncommit: x\n",
	`^dpkg-query -W -f '\$\{Version\}' 'conmon'$`:                      "2.1.6+ds1-1",
	`^dpkg-query -W -f '\$\{Version\}' 'containernetworking-plugins'$`: "1.1.1+ds1-3+b17",
}

// Install scripts srv as a guest where CRI-O installs, starts and runs.
func Install(srv *guesttest.Server) *Stack {
	s := &Stack{images: map[string]bool{}, containers: map[string]container{}, VolumeFile: "2"}
	srv.Reply(`^udevadm control`, guesttest.Reply{})
	srv.Reply(`^systemctl start crio$`, guesttest.Reply{})
	// The dead-man timer of a restored guest (vm.Machine.ArmDeadman): its
	// period is recorded; the fake never powers off.
	srv.Handle(`systemd-run --quiet --collect --unit=envctl-deadman --on-active=(\d+)s `, func(_ string, m []string) guesttest.Reply {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.Deadman = append(s.Deadman, m[1]+"s")
		return guesttest.Reply{}
	})
	srv.Handle(`^systemctl stop envctl-deadman.timer envctl-deadman.service 2>/dev/null; true$`, func(string, []string) guesttest.Reply {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.Deadman = append(s.Deadman, "stopped")
		return guesttest.Reply{}
	})
	srv.Reply(`^journalctl`, guesttest.Reply{Stdout: "-- journal of crio --\n"})
	// crio's journal: what the fake CRI-O logged; grep over it as the
	// test's log checks do.
	srv.Handle(`^journalctl -u crio --no-pager -o cat \| grep -E '(.*)'$`, func(_ string, m []string) guesttest.Reply {
		s.mu.Lock()
		defer s.mu.Unlock()
		re, err := regexp.Compile(m[1])
		if err != nil {
			return guesttest.Reply{Stderr: "grep: bad pattern", Exit: 2}
		}
		var out strings.Builder
		for _, l := range s.log {
			if re.MatchString(l) {
				out.WriteString(l + "\n")
			}
		}
		if out.Len() == 0 {
			return guesttest.Reply{Exit: 1}
		}
		return guesttest.Reply{Stdout: out.String()}
	})
	srv.Reply(`^crictl info`, guesttest.Reply{Stdout: "ready\n"})
	srv.Reply(`^crictl ps -a; crictl pods; crictl images$`, guesttest.Reply{Stdout: "CONTAINER ID\n"})
	srv.Reply(`^crictl rmi .* \|\| ! crictl inspecti`, guesttest.Reply{})
	for re, out := range Versions {
		srv.Reply(re, guesttest.Reply{Stdout: out})
	}
	// A binary the fake fetcher made ("#!crictl 1.36.0") answers with the
	// version it carries, in its tool's own format.
	srv.Handle(`^/usr/local/bin/(crio|crictl|runc|crun) --version$`, func(cmd string, m []string) guesttest.Reply {
		b, err := srv.ReadFile("/usr/local/bin/" + m[1])
		name, version, ok := strings.Cut(strings.TrimPrefix(string(b), "#!"), " ")
		if err != nil || !strings.HasPrefix(string(b), "#!") || !ok || name != m[1] {
			for re, out := range Versions {
				if regexp.MustCompile(re).MatchString(cmd) {
					return guesttest.Reply{Stdout: out}
				}
			}
			return guesttest.Reply{Stderr: "sh: " + m[1] + ": not found", Exit: 127}
		}
		return guesttest.Reply{Stdout: VersionOutput(name, version)}
	})
	// The running CRI-O answers CRI's Version with the version of the
	// crio binary that was installed (RunningVersion overrides it).
	srv.Handle(`^crictl version$`, func(string, []string) guesttest.Reply {
		s.mu.Lock()
		v := s.RunningVersion
		s.mu.Unlock()
		if v == "" {
			v = "1.34.0"
			if b, err := srv.ReadFile("/usr/local/bin/crio"); err == nil {
				if name, ver, ok := strings.Cut(strings.TrimPrefix(string(b), "#!"), " "); ok && name == "crio" {
					v = strings.TrimSpace(ver)
				}
			}
		}
		return guesttest.Reply{Stdout: "Version:  0.1.0\nRuntimeName:  cri-o\nRuntimeVersion:  " + v + "\nRuntimeApiVersion:  v1\n"}
	})
	// The test removes each case's pods by name, in the background.
	srv.Handle(`^(setsid -f sh -c ')?crictl pods -q --name '`, func(string, []string) guesttest.Reply { return guesttest.Reply{} })
	srv.Handle(`^crictl (pull|run|exec|rmi|inspecti|inspect|rm|rmp) (.*)$`, func(cmd string, m []string) guesttest.Reply {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.crictl(srv, m[1], strings.Fields(m[2]))
	})
	s.pullThenRun(srv)
	return s
}

// pullThenRun answers a case that pulls its own image right before it
// runs.
func (s *Stack) pullThenRun(srv *guesttest.Server) {
	srv.Handle(`^crictl pull (\S+) >/dev/null && crictl run (.*)$`, func(cmd string, m []string) guesttest.Reply {
		s.mu.Lock()
		defer s.mu.Unlock()
		if r := s.crictl(srv, "pull", []string{m[1]}); r.Exit != 0 {
			return r
		}
		return s.crictl(srv, "run", strings.Fields(m[2]))
	})
}

// VersionOutput is what a tool prints for --version.
func VersionOutput(name, version string) string {
	switch name {
	case "crio":
		return "crio version " + version + "\nGitCommit: unknown\n"
	case "crictl":
		return "crictl version v" + version + "\n"
	case "runc":
		return "runc version " + version + "\ncommit: v" + version + "\nspec: 1.2.1\n"
	}
	return name + " version " + version + "\ncommit: x\n"
}

// dropsMount reports whether the installed crictl is older than 1.31,
// whose cri-api has no Mount.image: then CRI-O sees no image and no host
// path.
func (s *Stack) dropsMount(srv *guesttest.Server) bool {
	if s.DropsMount {
		return true
	}
	b, err := srv.ReadFile("/usr/local/bin/crictl")
	if err != nil {
		return false
	}
	_, v, _ := strings.Cut(strings.TrimPrefix(string(b), "#!"), " ")
	return v != "" && catalog.Compare(v, "1.31") < 0
}

type mount struct {
	Image *struct {
		Image string `json:"image"`
	} `json:"image"`
	ImageSubPath string `json:"image_sub_path"`
}

func (s *Stack) crictl(srv *guesttest.Server, verb string, args []string) guesttest.Reply {
	unquote := func(x string) string { return strings.Trim(x, "'") }
	switch verb {
	case "pull":
		if s.PullFails != "" && strings.Contains(args[0], s.PullFails) {
			return guesttest.Reply{Stderr: "pulling image: unauthorized", Exit: 1}
		}
		s.images[unquote(args[0])] = true
		return guesttest.Reply{Stdout: "Image is up to date for sha256:abc\n"}
	case "run":
		ctr, _ := srv.ReadFile(args[len(args)-2])
		var cfg struct {
			Mounts []mount `json:"mounts"`
		}
		_ = json.Unmarshal(ctr, &cfg)
		if len(cfg.Mounts) == 0 || cfg.Mounts[0].Image == nil {
			return guesttest.Reply{Stderr: "container config has no image mount", Exit: 1}
		}
		m := cfg.Mounts[0]
		switch {
		case s.dropsMount(srv):
			return guesttest.Reply{Stderr: `level=fatal msg="creating container: rpc error: code = Unknown desc = mount.HostPath is empty"`, Exit: 1}
		case !s.images[m.Image.Image]:
			return s.refuse(`creating container: rpc error: code = Unknown desc = ImageVolumeMountFailed: image "` + m.Image.Image + `" does not exist locally`)
		case m.ImageSubPath == "foo-bar":
			return s.refuse(`creating container: rpc error: code = Unknown desc = ImageVolumeMountFailed: sub path "foo-bar" does not exist in image volume "` + m.Image.Image + `"`)
		}
		s.n++
		id := fmt.Sprintf("ctr%d", s.n)
		s.containers[id] = container{image: m.Image.Image, sub: m.ImageSubPath}
		return guesttest.Reply{Stdout: id + "\n"}
	case "exec":
		c, ok := s.containers[args[0]]
		sub := c.sub
		if !ok || len(args) < 3 {
			return guesttest.Reply{Stderr: "no such container", Exit: 1}
		}
		switch {
		case args[2] == "/volume/dir/file", args[2] == "/volume/file" && sub == "dir":
			return guesttest.Reply{Stdout: "1\n"}
		case args[2] == "/volume/file":
			return guesttest.Reply{Stdout: s.VolumeFile + "\n"}
		}
		return guesttest.Reply{Stderr: "cat: no such file", Exit: 1}
	case "rmi":
		for id, c := range s.containers {
			if c.image == unquote(args[0]) {
				return s.refuse("removing image: image used by " + id + ": image is in use by a container")
			}
		}
		delete(s.images, unquote(args[0]))
		return guesttest.Reply{}
	case "inspecti":
		return guesttest.Reply{Stdout: `{"status": {"id": "sha256:abc"}}`}
	case "inspect":
		return guesttest.Reply{Stdout: `{"status": {"mounts": [{"image": {"image": "sha256:abc"}}]}}`}
	case "rm":
		delete(s.containers, args[len(args)-1])
		return guesttest.Reply{}
	case "rmp":
		s.containers = map[string]container{}
		return guesttest.Reply{}
	}
	return guesttest.Reply{Stderr: "unknown crictl command", Exit: 2}
}

// container is a running container: the image mounted as its volume, and the
// sub path.
type container struct{ image, sub string }
