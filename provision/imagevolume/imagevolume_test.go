package imagevolume

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
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
	var sb struct {
		Metadata struct{ Name, Namespace, UID string } `json:"metadata"`
		Linux    struct {
			SecurityContext struct {
				NamespaceOptions struct{ Network int } `json:"namespace_options"`
			} `json:"security_context"`
		} `json:"linux"`
	}
	if err := json.Unmarshal([]byte(SandboxConfig("p")), &sb); err != nil {
		t.Fatal(err)
	}
	if sb.Metadata.Name != "p" || sb.Metadata.Namespace != "envctl" || sb.Linux.SecurityContext.NamespaceOptions.Network != 2 {
		t.Errorf("sandbox %+v: want the pod on the host network (NODE = 2)", sb)
	}
}

func run(t *testing.T, setup func(*criotest.Stack)) Result {
	srv, c := guesttest.Connect(t)
	sim := criotest.Install(srv)
	if setup != nil {
		setup(sim)
	}
	res, err := Run(context.Background(), c, Config{VolumeImage: "localhost:5000/envctl/artifact:v1", WorkloadImage: "localhost:5000/envctl/workload:v1", Dir: "/root/envctl-test"})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"container.json", "sandbox.json", "container-invalid.json"} {
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

func TestStepsAllPass(t *testing.T) {
	res := run(t, nil)
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

func TestSeedCaseFailsAndSkipsWhatCannotRun(t *testing.T) {
	res := run(t, func(c *criotest.Stack) { c.DropsMount = true })
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
func TestRefusalsMustHaveTheirReason(t *testing.T) {
	res := run(t, func(c *criotest.Stack) { c.WrongReasons = true })
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

func TestPullFailures(t *testing.T) {
	res := run(t, func(c *criotest.Stack) { c.PullFails = "workload" })
	if len(res.Steps) != 1 || res.Steps[0].Status != report.Fail {
		t.Errorf("a failed workload pull must stop the test: %+v", res.Steps)
	}
	res = run(t, func(c *criotest.Stack) { c.PullFails = "artifact" })
	st := statuses(res)
	if st["lifecycle: pull volume image"] != report.Fail || st["lifecycle: /volume/file is 2"] != report.Skip {
		t.Errorf("statuses %v", st)
	}
}

// A guest that stops answering mid-test is not a failed test: the steps
// after it are skipped, none fails, and Run says it could not test.
func TestGuestLostMidTest(t *testing.T) {
	srv, c := guesttest.Connect(t)
	criotest.Install(srv)
	srv.Handle(`^crictl exec `, func(string, []string) guesttest.Reply {
		go srv.Close() // the VM froze: the connection drops
		time.Sleep(200 * time.Millisecond)
		return guesttest.Reply{Stdout: "1\n"}
	})
	res, err := Run(context.Background(), c, Config{VolumeImage: "localhost:5000/envctl/artifact:v1", WorkloadImage: "localhost:5000/envctl/workload:v1", Dir: "/root/envctl-test"})
	if err == nil || !strings.Contains(err.Error(), "stopped answering") {
		t.Fatalf("err %v", err)
	}
	for _, s := range res.Steps {
		if s.Status == report.Fail {
			t.Errorf("step %q failed (%s); a lost guest must not fail steps", s.Name, s.Message)
		}
	}
	if last := res.Steps[len(res.Steps)-1]; last.Status != report.Skip {
		t.Errorf("last step %+v", last)
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
