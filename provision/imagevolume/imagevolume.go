package imagevolume

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/envctl/envctl/provision/guest"
	"github.com/envctl/envctl/provision/report"
)

// Guest is what the test needs from a booted VM with CRI-O running;
// *guest.Client implements it over SSH.
type Guest interface {
	Output(ctx context.Context, cmd string) (string, error)
	Split(ctx context.Context, cmd string) (stdout, combined string, err error)
	WriteFiles(ctx context.Context, files []guest.File, mode os.FileMode) error
}

// Config is what the test needs to know.
type Config struct {
	VolumeImage   string // the image mounted as a volume (every case's, unless Volumes names one per case)
	WorkloadImage string // has /bin/sleep and /bin/cat
	Dir           string // scratch directory in the guest
	// Volumes gives each case an image of its own (the same content under
	// an image ID of its own): then the cases run side by side, in pods of
	// their own, and "not pulled" cannot disturb the others. Without it
	// (upstream's single artifact image), or with Serial, they run one
	// after another on VolumeImage.
	Volumes Volumes
	Serial  bool
}

// Volumes are the volume images of the four cases.
type Volumes struct{ Lifecycle, SubPath, Invalid, NotPulled string }

// distinct reports whether every case has an image name of its own.
func (v Volumes) distinct() bool {
	names := map[string]bool{v.Lifecycle: true, v.SubPath: true, v.Invalid: true, v.NotPulled: true}
	return !names[""] && len(names) == 4
}

// SideBySide reports whether the cases run concurrently.
func (c Config) SideBySide() bool { return !c.Serial && c.Volumes.distinct() }

// volumes are the image names the cases use.
func (c Config) volumes() Volumes {
	if c.SideBySide() {
		return c.Volumes
	}
	v := c.VolumeImage
	return Volumes{v, v, v, v}
}

// Result is what a run of the test found.
type Result struct {
	Steps []report.Step
	// Artifacts are files worth keeping when the test fails (name → content).
	Artifacts map[string]string
	// SideBySide: the cases ran concurrently.
	SideBySide bool
}

// Run performs every step. It returns an error only when the test could
// not be carried out at all; step failures are in the result. The steps
// are reported in the same order whether the cases ran side by side or
// one after another.
//
// When the guest stops answering (the connection breaks, a keepalive goes
// unanswered) or ctx ends, the remaining steps are skipped and the error
// says so: the test could not be carried out, which is not a failure.
func Run(ctx context.Context, g Guest, cfg Config) (Result, error) {
	r := &runner{g: g, cfg: cfg, vol: cfg.volumes()}
	res := Result{Artifacts: map[string]string{}, SideBySide: cfg.SideBySide()}
	var files []guest.File
	for _, f := range ConfigFiles(cfg.WorkloadImage, r.vol) {
		res.Artifacts[f.Name] = f.Content
		files = append(files, guest.File{Path: cfg.Dir + "/" + f.Name, Data: []byte(f.Content)})
	}
	if err := g.WriteFiles(ctx, files, 0o644); err != nil {
		return res, fmt.Errorf("image-volume test: could not write its files into the guest (has it stopped answering?): %w", err)
	}
	// Setup: the workload image the containers run.
	setup := r.newCase()
	_, ok := setup.step(ctx, "setup: pull workload image", "crictl pull "+guest.Quote(cfg.WorkloadImage), succeeds)
	cases := []*caseRun{setup}
	if ok {
		bodies := []func(context.Context, *caseRun){r.lifecycle, r.subPath, r.invalidSubPath, r.notPulled}
		runs := make([]*caseRun, len(bodies))
		for i := range bodies {
			runs[i] = r.newCase()
		}
		if res.SideBySide {
			var wg sync.WaitGroup
			for i, body := range bodies {
				wg.Go(func() { body(ctx, runs[i]) })
			}
			wg.Wait()
		} else {
			for i, body := range bodies {
				body(ctx, runs[i])
			}
		}
		cases = append(cases, runs...)
	}
	for _, c := range cases {
		res.Steps = append(res.Steps, c.steps...)
		maps.Copy(res.Artifacts, c.artifacts)
	}
	return res, r.lostErr()
}

type runner struct {
	g   Guest
	cfg Config
	vol Volumes

	mu sync.Mutex
	// lost is the first error that was not a command's own exit status.
	lost error
}

// caseRun records one case's steps and files; the cases share the runner.
type caseRun struct {
	*runner
	steps     []report.Step
	artifacts map[string]string
}

func (r *runner) newCase() *caseRun { return &caseRun{runner: r, artifacts: map[string]string{}} }

func (r *runner) lostErr() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.lost
}

// broken notes an error that is not the command's own exit status: the
// guest or the connection to it is gone, or the run was cancelled.
func (r *runner) broken(ctx context.Context, step string, err error) bool {
	var exit *guest.ExitError
	if err == nil || (errors.As(err, &exit) && ctx.Err() == nil) {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.lost == nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		r.lost = fmt.Errorf("image-volume test: the guest stopped answering at %q: %w", step, err)
	}
	return true
}

func (c *caseRun) add(s report.Step) { c.steps = append(c.steps, report.NewStep(s)) }

type mount struct {
	ContainerPath string     `json:"container_path"`
	HostPath      string     `json:"host_path"`
	Readonly      bool       `json:"readonly"`
	Image         *imageSpec `json:"image,omitempty"`
	ImageSubPath  string     `json:"image_sub_path,omitempty"`
}

type imageSpec struct {
	Image              string `json:"image"`
	UserSpecifiedImage string `json:"user_specified_image,omitempty"`
}

// podNamespaces are the namespace options of the test's pods and
// containers: the host network (NODE = 2; the test is about volumes), and
// a PID namespace per container (CONTAINER = 1), which is what the kubelet
// sends for a pod that does not share its process namespace. With that,
// CRI-O drops the pod's infra (pause) container, as it does for such pods
// in a cluster: under TCG that saves about a quarter of each case's work
// (no conmon, runc create, start, kill and delete for a pause process).
var podNamespaces = map[string]any{"security_context": map[string]any{"namespace_options": map[string]any{"network": 2, "pid": 1}}}

// ContainerConfig is the container config the kubelet would send for an
// image volume at /volume (crictl's JSON, snake_case keys).
func ContainerConfig(workload, volume, subPath string) string {
	cfg := map[string]any{
		"metadata": map[string]any{"name": "envctl-volume"},
		"image":    map[string]any{"image": workload},
		"command":  []string{"/bin/sleep", "infinity"},
		"mounts": []mount{{
			ContainerPath: "/volume", HostPath: "", Readonly: true,
			Image:        &imageSpec{Image: volume, UserSpecifiedImage: volume},
			ImageSubPath: subPath,
		}},
		"linux": podNamespaces,
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return string(b)
}

// SandboxConfig is the pod sandbox (see podNamespaces).
func SandboxConfig(name string) string {
	cfg := map[string]any{
		"metadata":      map[string]any{"name": name, "namespace": "envctl", "uid": name + "-uid", "attempt": 1},
		"hostname":      name,
		"log_directory": "/var/log/envctl-pods",
		"linux":         map[string]any{"cgroup_parent": "envctl.slice", "security_context": podNamespaces["security_context"]},
	}
	b, _ := json.MarshalIndent(cfg, "", "  ")
	return string(b)
}

// step executes a guest command for a step and records it. It returns the
// command's stdout (an ID, say), while the step keeps the combined output.
func (c *caseRun) step(ctx context.Context, name, cmd string, check func(out string, err error) (report.Status, string)) (string, bool) {
	if c.lostErr() != nil {
		c.skip(name, "not run: the guest stopped answering")
		return "", false
	}
	start := time.Now()
	stdout, out, err := c.g.Split(ctx, cmd)
	if c.broken(ctx, name, err) {
		c.add(report.Step{Name: name, Status: report.Skip, Duration: time.Since(start), Command: cmd, Output: out, Message: "could not run: " + err.Error()})
		return "", false
	}
	status, msg := check(out, err)
	c.add(report.Step{Name: name, Status: status, Duration: time.Since(start), Command: cmd, Output: out, Message: msg})
	return stdout, status == report.Pass
}

func (c *caseRun) skip(name, why string) {
	c.add(report.Step{Name: name, Status: report.Skip, Message: why})
}

func succeeds(out string, err error) (report.Status, string) {
	if err != nil {
		return report.Fail, exitMsg(err) + ": " + lastLine(out)
	}
	return report.Pass, ""
}

func fails(out string, err error) (report.Status, string) {
	if err == nil {
		return report.Fail, "succeeded, but must fail"
	}
	var ee *guest.ExitError
	if !errors.As(err, &ee) {
		return report.Fail, err.Error()
	}
	return report.Pass, "refused as expected: " + lastLine(out)
}

// failsWith is fails that also requires the reason: a failure for another
// reason (a crash, a missing image, a wrong request) fails the step.
func failsWith(why string, re *regexp.Regexp) func(string, error) (report.Status, string) {
	return func(out string, err error) (report.Status, string) {
		status, msg := fails(out, err)
		if status != report.Pass {
			return status, msg
		}
		if !re.MatchString(out) {
			return report.Fail, "failed, but not because " + why + " (want /" + re.String() + "/): " + lastLine(out)
		}
		return status, msg
	}
}

// The reasons CRI-O gives for the refusals the test expects; upstream's
// invalid-sub-path test requires the same text in crio's log.
var (
	inUseRE      = regexp.MustCompile(`(?i)in use`)
	badSubPathRE = regexp.MustCompile(`ImageVolumeMountFailed: sub path .* does not exist in image volume`)
	notLocalRE   = regexp.MustCompile(`ImageVolumeMountFailed: .*does not exist locally`)
)

func prints(want string) func(string, error) (report.Status, string) {
	return func(out string, err error) (report.Status, string) {
		if err != nil {
			return report.Fail, exitMsg(err) + ": " + lastLine(out)
		}
		if strings.TrimSpace(out) != want {
			return report.Fail, fmt.Sprintf("printed %q, want %q", strings.TrimSpace(out), want)
		}
		return report.Pass, ""
	}
}

func exitMsg(err error) string {
	var ee *guest.ExitError
	if errors.As(err, &ee) {
		return fmt.Sprintf("exit %d", ee.Status)
	}
	return err.Error()
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	l := lines[len(lines)-1]
	if len(l) > 200 {
		l = l[:197] + "..."
	}
	return l
}

// ConfigFile is one of the crictl JSON files the test runs with.
type ConfigFile struct{ Name, Content string }

// ConfigFiles are the pod and container configs of the test's cases, for
// the workload image and the images mounted as volumes.
func ConfigFiles(workload string, v Volumes) []ConfigFile {
	return []ConfigFile{
		{"sandbox.json", SandboxConfig("envctl-lifecycle")},
		{"sandbox-subpath.json", SandboxConfig("envctl-subpath")},
		{"sandbox-invalid.json", SandboxConfig("envctl-invalid")},
		{"sandbox-notpulled.json", SandboxConfig("envctl-notpulled")},
		{"container.json", ContainerConfig(workload, v.Lifecycle, "")},
		{"container-subpath.json", ContainerConfig(workload, v.SubPath, "dir")},
		{"container-invalid.json", ContainerConfig(workload, v.Invalid, "foo-bar")},
		{"container-notpulled.json", ContainerConfig(workload, v.NotPulled, "")},
	}
}

// lifecycle is upstream's "OCI image volume mount lifecycle".
func (r *runner) lifecycle(ctx context.Context, c *caseRun) {
	const lifecycle = "lifecycle: "
	img, dir, q := r.vol.Lifecycle, r.cfg.Dir, guest.Quote
	if _, ok := c.step(ctx, lifecycle+"pull volume image", "crictl pull "+q(img), succeeds); !ok {
		c.skipRest(lifecycle, "the volume image could not be pulled")
	} else if out, ok := c.step(ctx, lifecycle+"run container with image volume", "crictl run "+dir+"/container.json "+dir+"/sandbox.json", succeeds); !ok {
		c.artifacts["crictl-run.txt"] = c.steps[len(c.steps)-1].Output
		c.skipRest(lifecycle, "the container did not start")
	} else {
		ctr := lastLine(out)
		c.step(ctx, lifecycle+"/volume/dir/file is 1", "crictl exec "+ctr+" cat /volume/dir/file", prints("1"))
		c.step(ctx, lifecycle+"/volume/file is 2", "crictl exec "+ctr+" cat /volume/file", prints("2"))
		c.step(ctx, lifecycle+"rmi refused while in use", "crictl rmi "+q(img), failsWith("the image is in use", inUseRE))
		c.imageIDStep(ctx, lifecycle+"image ID equals mount image ID", img, ctr)
		c.step(ctx, lifecycle+"rm container", "crictl rm -f "+ctr, succeeds)
		c.step(ctx, lifecycle+"rmi after removal", "crictl rmi "+q(img), succeeds)
	}
	c.release(ctx, "envctl-lifecycle")
}

// subPath: only /dir is mounted, so /volume/file is dir/file.
func (r *runner) subPath(ctx context.Context, c *caseRun) {
	const sub = "sub path: "
	if _, ok := c.step(ctx, sub+"pull volume image", "crictl pull "+guest.Quote(r.vol.SubPath), succeeds); ok {
		dir := r.cfg.Dir
		if out, ok := c.step(ctx, sub+"run with image_sub_path=dir", "crictl run "+dir+"/container-subpath.json "+dir+"/sandbox-subpath.json", succeeds); ok {
			ctr := lastLine(out)
			c.step(ctx, sub+"/volume/file is 1", "crictl exec "+ctr+" cat /volume/file", prints("1"))
			c.step(ctx, sub+"rm container", "crictl rm -f "+ctr, succeeds)
		} else {
			c.skip(sub+"/volume/file is 1", "the container did not start")
		}
	}
	c.release(ctx, "envctl-subpath")
}

// invalidSubPath: CreateContainer must fail, and say why; as upstream,
// the reason must also be in crio's log. One after another, the sub-path
// case has pulled the image by now; side by side, the case pulls its own.
func (r *runner) invalidSubPath(ctx context.Context, c *caseRun) {
	const inv = "invalid sub path: "
	run := "crictl run " + r.cfg.Dir + "/container-invalid.json " + r.cfg.Dir + "/sandbox-invalid.json"
	if r.cfg.SideBySide() {
		run = "crictl pull " + guest.Quote(r.vol.Invalid) + " >/dev/null && " + run
	}
	c.step(ctx, inv+"run with image_sub_path=foo-bar fails", run, failsWith("the sub path does not exist in the image", badSubPathRE))
	c.step(ctx, inv+"crio's log says why", "journalctl -u crio --no-pager -o cat | grep -E "+guest.Quote(badSubPathRE.String()), succeeds)
	c.release(ctx, "envctl-invalid")
}

// notPulled: without the image, the run must fail. One after another,
// the earlier cases' pods are gone first, whatever became of their
// containers (they used the same image); side by side, the case's image
// is its own and was never pulled.
func (r *runner) notPulled(ctx context.Context, c *caseRun) {
	const np = "not pulled: "
	img, q := r.vol.NotPulled, guest.Quote
	if !r.cfg.SideBySide() {
		c.settle(ctx, "envctl-lifecycle", "envctl-subpath", "envctl-invalid")
	}
	c.step(ctx, np+"remove the volume image", "crictl rmi "+q(img)+" || ! crictl inspecti "+q(img)+" >/dev/null 2>&1", succeeds)
	c.step(ctx, np+"run without the volume image fails", "crictl run --no-pull "+r.cfg.Dir+"/container-notpulled.json "+r.cfg.Dir+"/sandbox-notpulled.json", failsWith("the image does not exist locally", notLocalRE))
	c.release(ctx, "envctl-notpulled")
}

func (c *caseRun) skipRest(prefix, why string) {
	for _, s := range []string{"/volume/dir/file is 1", "/volume/file is 2", "rmi refused while in use", "image ID equals mount image ID", "rm container", "rmi after removal"} {
		c.skip(prefix+s, why)
	}
}

// imageIDStep checks that the mount records the image by ID, which the
// kubelet's image garbage collection relies on.
func (c *caseRun) imageIDStep(ctx context.Context, name, img, ctr string) {
	if c.lostErr() != nil {
		c.skip(name, "not run: the guest stopped answering")
		return
	}
	start := time.Now()
	cmd := "crictl inspecti -o json " + guest.Quote(img) + " && crictl inspect -o json " + ctr
	imgOut, err1 := c.g.Output(ctx, "crictl inspecti -o json "+guest.Quote(img))
	ctrOut, err2 := c.g.Output(ctx, "crictl inspect -o json "+ctr)
	c.artifacts["crictl-inspect.json"] = ctrOut
	c.artifacts["crictl-inspecti.json"] = imgOut
	st := report.Step{Name: name, Command: cmd, Duration: time.Since(start)}
	if c.broken(ctx, name, err1) || c.broken(ctx, name, err2) {
		st.Status, st.Message = report.Skip, "could not run: the guest stopped answering"
		c.add(st)
		return
	}
	var ii struct {
		Status struct {
			ID string `json:"id"`
		} `json:"status"`
	}
	var ci struct {
		Status struct {
			Mounts []struct {
				Image *struct {
					Image string `json:"image"`
				} `json:"image"`
			} `json:"mounts"`
		} `json:"status"`
	}
	switch {
	case err1 != nil || err2 != nil:
		st.Status, st.Message, st.Output = report.Fail, "inspect failed", imgOut+ctrOut
	case json.Unmarshal([]byte(imgOut), &ii) != nil || json.Unmarshal([]byte(ctrOut), &ci) != nil:
		st.Status, st.Message, st.Output = report.Fail, "cannot parse crictl's JSON", imgOut+ctrOut
	case len(ci.Status.Mounts) == 0 || ci.Status.Mounts[0].Image == nil:
		st.Status, st.Message = report.Fail, "the container status has no image mount"
	case ci.Status.Mounts[0].Image.Image != ii.Status.ID:
		st.Status, st.Message = report.Fail, fmt.Sprintf("mount image %q, image ID %q", ci.Status.Mounts[0].Image.Image, ii.Status.ID)
	default:
		st.Status, st.Output = report.Pass, "image ID "+ii.Status.ID
	}
	c.add(st)
}

// release removes a case's pod (and its containers) in the background:
// stopping a pod takes a second or more under software emulation, and the
// next case need not wait for it, since every case's pod has a name of its
// own (so nothing else is removed).
func (c *caseRun) release(ctx context.Context, pod string) {
	if c.lostErr() != nil {
		return
	}
	_, err := c.g.Output(ctx, "setsid -f sh -c "+guest.Quote(removePods(pod))+" >/dev/null 2>&1 </dev/null")
	c.broken(ctx, "cleanup", err)
}

// settle removes pods and waits until they are gone.
func (c *caseRun) settle(ctx context.Context, pods ...string) {
	if c.lostErr() != nil {
		return
	}
	_, err := c.g.Output(ctx, removePods(pods...)+" >/dev/null 2>&1; true")
	c.broken(ctx, "cleanup", err)
}

func removePods(pods ...string) string {
	return "crictl pods -q --name '^(" + strings.Join(pods, "|") + ")$' | xargs -r crictl rmp -f"
}
