package imagevolume

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envctl/envctl/provision/crio/criotest"
	"github.com/envctl/envctl/provision/guest/guesttest"
	"github.com/envctl/envctl/provision/report"
)

func TestContainerConfigIsWhatTheKubeletSends(t *testing.T) {
	var cfg struct {
		Mounts []struct {
			ContainerPath string  `json:"container_path"`
			HostPath      *string `json:"host_path"`
			Readonly      bool    `json:"readonly"`
			Image         struct {
				Image              string `json:"image"`
				UserSpecifiedImage string `json:"user_specified_image"`
			} `json:"image"`
			ImageSubPath string `json:"image_sub_path"`
		} `json:"mounts"`
	}
	if err := json.Unmarshal([]byte(ContainerConfig("w", "v", "dir")), &cfg); err != nil {
		t.Fatal(err)
	}
	m := cfg.Mounts[0]
	if m.ContainerPath != "/volume" || m.HostPath == nil || *m.HostPath != "" || !m.Readonly || m.Image.Image != "v" || m.Image.UserSpecifiedImage != "v" || m.ImageSubPath != "dir" {
		t.Errorf("mount %+v", m)
	}
	// linux is what a pod's and a container's config say of namespaces.
	type linux struct {
		Linux struct {
			SecurityContext struct {
				NamespaceOptions struct{ Network, Pid int } `json:"namespace_options"`
			} `json:"security_context"`
		} `json:"linux"`
	}
	var sb struct {
		Metadata struct{ Name, Namespace, UID string } `json:"metadata"`
		linux
	}
	if err := json.Unmarshal([]byte(SandboxConfig("p")), &sb); err != nil {
		t.Fatal(err)
	}
	if ns := sb.Linux.SecurityContext.NamespaceOptions; sb.Metadata.Name != "p" || sb.Metadata.Namespace != "envctl" || ns.Network != 2 || ns.Pid != 1 {
		t.Errorf("sandbox %+v: want the pod on the host network (NODE = 2), a PID namespace per container (CONTAINER = 1)", sb)
	}
	// The container's options must match the pod's: CRI-O refuses a
	// container that asks for the pod's PID namespace in a pod without
	// an infra container.
	var ctr linux
	if err := json.Unmarshal([]byte(ContainerConfig("w", "v", "")), &ctr); err != nil {
		t.Fatal(err)
	}
	if ctr.Linux.SecurityContext.NamespaceOptions != sb.Linux.SecurityContext.NamespaceOptions {
		t.Errorf("container namespaces %+v, pod's %+v: want the same", ctr.Linux.SecurityContext.NamespaceOptions, sb.Linux.SecurityContext.NamespaceOptions)
	}
}

// modes are the two ways the cases run: one after another on one volume
// image (upstream's), and side by side, each on an image of its own.
var modes = []struct {
	name string
	cfg  Config
}{
	{"one after another", Config{VolumeImage: "localhost:5000/envctl/artifact:v1", WorkloadImage: "localhost:5000/envctl/workload:v1", Dir: "/root/envctl-test"}},
	{"side by side", Config{VolumeImage: "localhost:5000/envctl/artifact:v1", WorkloadImage: "localhost:5000/envctl/workload:v1", Dir: "/root/envctl-test",
		Volumes: Volumes{"localhost:5000/envctl/artifact:v1", "localhost:5000/envctl/artifact-subpath:v1", "localhost:5000/envctl/artifact-invalid:v1", "localhost:5000/envctl/artifact-notpulled:v1"}}},
}

// forModes runs a test in both modes.
func forModes(t *testing.T, f func(t *testing.T, cfg Config)) {
	for _, m := range modes {
		t.Run(m.name, func(t *testing.T) { f(t, m.cfg) })
	}
}

func run(t *testing.T, cfg Config, setup func(*criotest.Stack)) Result {
	srv, c := guesttest.Connect(t)
	sim := criotest.Install(srv)
	if setup != nil {
		setup(sim)
	}
	res, err := Run(context.Background(), c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.SideBySide != cfg.SideBySide() {
		t.Errorf("SideBySide %v, config %+v", res.SideBySide, cfg)
	}
	for _, f := range []string{"container.json", "sandbox.json", "container-invalid.json", "container-notpulled.json"} {
		if _, err := srv.ReadFile("/root/envctl-test/" + f); err != nil {
			t.Errorf("config %s not written", f)
		}
	}
	return res
}

func statuses(res Result) map[string]report.Status {
	out := map[string]report.Status{}
	for _, s := range res.Steps {
		out[s.Name] = s.Status
	}
	return out
}

func TestStepsAllPass(t *testing.T) { forModes(t, stepsAllPass) }

func stepsAllPass(t *testing.T, cfg Config) {
	res := run(t, cfg, nil)
	want := []string{
		"setup: pull workload image",
		"lifecycle: pull volume image", "lifecycle: run container with image volume", "lifecycle: /volume/dir/file is 1", "lifecycle: /volume/file is 2",
		"lifecycle: rmi refused while in use", "lifecycle: image ID equals mount image ID", "lifecycle: rm container", "lifecycle: rmi after removal",
		"sub path: pull volume image", "sub path: run with image_sub_path=dir", "sub path: /volume/file is 1", "sub path: rm container",
		"invalid sub path: run with image_sub_path=foo-bar fails", "invalid sub path: crio's log says why",
		"not pulled: remove the volume image", "not pulled: run without the volume image fails",
	}
	var got []string
	for _, s := range res.Steps {
		got = append(got, s.Name)
		if s.Status != report.Pass {
			t.Errorf("%s: %s %s", s.Name, s.Status, s.Message)
		}
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("steps:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestSeedCaseFailsAndSkipsWhatCannotRun(t *testing.T) { forModes(t, seedCaseFails) }

func seedCaseFails(t *testing.T, cfg Config) {
	res := run(t, cfg, func(c *criotest.Stack) { c.DropsMount = true })
	st := statuses(res)
	if st["lifecycle: run container with image volume"] != report.Fail || st["sub path: run with image_sub_path=dir"] != report.Fail {
		t.Errorf("runs did not fail: %v", st)
	}
	for _, s := range []string{"lifecycle: /volume/dir/file is 1", "lifecycle: rmi after removal", "sub path: /volume/file is 1"} {
		if st[s] != report.Skip {
			t.Errorf("%s: %s, want skip", s, st[s])
		}
	}
	// Refusals for the wrong reason are failures, not passes.
	if st["invalid sub path: run with image_sub_path=foo-bar fails"] != report.Fail || st["not pulled: run without the volume image fails"] != report.Fail {
		t.Errorf("HostPath-is-empty refusals passed: %v", st)
	}
	if !strings.Contains(res.Artifacts["crictl-run.txt"], "mount.HostPath is empty") {
		t.Errorf("artifacts %v", res.Artifacts)
	}
}

// Every step that expects a refusal checks CRI-O's reason: refused for
// another reason, the step fails, naming the reason it wanted.
func TestRefusalsMustHaveTheirReason(t *testing.T) { forModes(t, refusalsHaveReasons) }

func refusalsHaveReasons(t *testing.T, cfg Config) {
	res := run(t, cfg, func(c *criotest.Stack) { c.WrongReasons = true })
	byName := map[string]report.Step{}
	for _, s := range res.Steps {
		byName[s.Name] = s
	}
	for _, step := range []struct{ name, why string }{
		{"lifecycle: rmi refused while in use", "not because the image is in use"},
		{"invalid sub path: run with image_sub_path=foo-bar fails", "not because the sub path does not exist in the image"},
		{"invalid sub path: crio's log says why", ""},
		{"not pulled: run without the volume image fails", "not because the image does not exist locally"},
	} {
		s := byName[step.name]
		if s.Status != report.Fail || !strings.Contains(s.Message, step.why) {
			t.Errorf("%s: %s %q, want a failure %q", step.name, s.Status, s.Message, step.why)
		}
	}
	// The steps that expect success are unaffected.
	if byName["lifecycle: /volume/file is 2"].Status != report.Pass {
		t.Errorf("statuses %v", statuses(res))
	}
}

func TestPullFailures(t *testing.T) { forModes(t, pullFailures) }

func pullFailures(t *testing.T, cfg Config) {
	res := run(t, cfg, func(c *criotest.Stack) { c.PullFails = "workload" })
	if len(res.Steps) != 1 || res.Steps[0].Status != report.Fail {
		t.Errorf("a failed workload pull must stop the test: %+v", res.Steps)
	}
	res = run(t, cfg, func(c *criotest.Stack) { c.PullFails = "artifact:" })
	st := statuses(res)
	if st["lifecycle: pull volume image"] != report.Fail || st["lifecycle: /volume/file is 2"] != report.Skip {
		t.Errorf("statuses %v", st)
	}
}

// A guest that stops answering mid-test is not a failed test: the steps
// after it are skipped, none fails, and Run says it could not test.
func TestGuestLostMidTest(t *testing.T) { forModes(t, guestLost) }

func guestLost(t *testing.T, cfg Config) {
	srv, c := guesttest.Connect(t)
	criotest.Install(srv)
	srv.Handle(`^crictl exec `, func(string, []string) guesttest.Reply {
		go srv.Close() // the VM froze: the connection drops
		time.Sleep(200 * time.Millisecond)
		return guesttest.Reply{Stdout: "1\n"}
	})
	res, err := Run(context.Background(), c, cfg)
	if err == nil || !strings.Contains(err.Error(), "stopped answering") {
		t.Fatalf("err %v", err)
	}
	for _, s := range res.Steps {
		if s.Status == report.Fail {
			t.Errorf("step %q failed (%s); a lost guest must not fail steps", s.Name, s.Message)
		}
	}
	// The lifecycle's steps after the lost exec are skipped (side by side,
	// another case may have finished before the connection dropped).
	if st := statuses(res); st["lifecycle: rm container"] != report.Skip {
		t.Errorf("lifecycle: rm container: %s, want skip (%v)", st["lifecycle: rm container"], st)
	}
	if !cfg.SideBySide() {
		if last := res.Steps[len(res.Steps)-1]; last.Status != report.Skip {
			t.Errorf("last step %+v", last)
		}
	}
}

// A cancelled run stops at once, and says it was cancelled.
func TestCancelledMidTest(t *testing.T) {
	srv, c := guesttest.Connect(t)
	criotest.Install(srv)
	ctx, cancel := context.WithCancel(context.Background())
	srv.Handle(`^crictl exec `, func(string, []string) guesttest.Reply { cancel(); return guesttest.Reply{Stdout: "1\n"} })
	_, err := Run(ctx, c, Config{VolumeImage: "v", WorkloadImage: "w", Dir: "/root/envctl-test"})
	if !errors.Is(err, context.Canceled) {
		t.Errorf("err %v", err)
	}
}

// Side by side, the cases really overlap: the lifecycle's first exec waits
// until the not-pulled case has run (one after another, it never would),
// and every case still passes, in the same order as one after another.
// With Serial the same config runs one case at a time.
func TestCasesRunSideBySide(t *testing.T) {
	cfg := modes[1].cfg
	srv, c := guesttest.Connect(t)
	criotest.Install(srv)
	notPulledRan := make(chan struct{})
	var once sync.Once
	srv.Handle(`^crictl run --no-pull `, func(string, []string) guesttest.Reply {
		once.Do(func() { close(notPulledRan) })
		return guesttest.Reply{Stderr: `ImageVolumeMountFailed: image "x" does not exist locally`, Exit: 1}
	})
	srv.Handle(`^crictl exec \S+ cat /volume/dir/file$`, func(string, []string) guesttest.Reply {
		select {
		case <-notPulledRan:
			return guesttest.Reply{Stdout: "1\n"}
		case <-time.After(5 * time.Second):
			return guesttest.Reply{Stderr: "the not-pulled case did not run meanwhile", Exit: 1}
		}
	})
	res, err := Run(context.Background(), c, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !res.SideBySide {
		t.Fatal("the cases did not run side by side")
	}
	var got []string
	for _, s := range res.Steps {
		got = append(got, s.Name)
		if s.Status != report.Pass {
			t.Errorf("%s: %s %s", s.Name, s.Status, s.Message)
		}
	}
	serial := run(t, Config{VolumeImage: cfg.VolumeImage, WorkloadImage: cfg.WorkloadImage, Dir: cfg.Dir, Volumes: cfg.Volumes, Serial: true}, nil)
	var want []string
	for _, s := range serial.Steps {
		want = append(want, s.Name)
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("side by side the steps are\n%s\none after another\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	for _, cmd := range srv.Commands() {
		if strings.HasPrefix(cmd, "crictl run --no-pull") && !strings.Contains(cmd, "container-notpulled.json") {
			t.Errorf("the not-pulled case ran %q, not its own config", cmd)
		}
	}
}
