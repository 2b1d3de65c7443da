package cellrun

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artifacts"
	"github.com/envctl/envctl/provision/bats"
	"github.com/envctl/envctl/provision/crio"
	"github.com/envctl/envctl/provision/guest"
	"github.com/envctl/envctl/provision/imagevolume"
	"github.com/envctl/envctl/provision/report"
	"github.com/envctl/envctl/provision/testimages"
)

// testRefs are the image names the guest uses: always from the host's
// registry, reached through an SSH remote forward on the guest's
// loopback, so the guest needs no network.
func (r *run) testRefs() (registryHost, pause, volume, workload string) {
	host := fmt.Sprintf("localhost:%d", testimages.GuestPort)
	if r.opts.TestImages == UpstreamImages {
		up := testimages.Upstream
		ref := func(s string) string { repo, _ := testimages.UpstreamRepo(s); return testimages.GuestRef(repo) }
		return host, ref(up.Pause), ref(up.Artifact), ref(up.Workload)
	}
	return host, testimages.GuestRef(testimages.PauseRepo),
		testimages.GuestRef(testimages.ArtifactRepo), testimages.GuestRef(testimages.WorkloadRepo)
}

// registry serves the test images on the guest's loopback: built
// in-process (local), or pulled by the host from upstream (upstream).
func (r *run) registry(ctx context.Context) (func(), error) {
	start := time.Now()
	var reg *testimages.Registry
	var err error
	if r.opts.TestImages == UpstreamImages {
		up := testimages.Upstream
		reg, err = testimages.ServeUpstream(ctx, up.Artifact, up.Workload, up.Pause)
	} else {
		reg, err = testimages.Serve(ctx, r.opts.Workload)
	}
	if _, upstream := r.cell.Test.UpstreamFile(); upstream && err == nil {
		if err = reg.PushNamed(ctx, r.opts.Workload, r.upstreamNames()); err != nil {
			_ = reg.Close()
		}
	}
	if err != nil {
		return nil, fault.Infraf("test registry: %w", err)
	}
	fwd, err := r.machine.SSH.ForwardRemote(fmt.Sprintf("127.0.0.1:%d", testimages.GuestPort), reg.Addr)
	if err != nil {
		_ = reg.Close()
		return nil, fault.AsInfra(err)
	}
	r.sub("test.registry", time.Since(start))
	return func() { _ = fwd.Close(); _ = reg.Close() }, nil
}

// runTest runs the cell's suites: envctl's own, then upstream's.
func (r *run) runTest(ctx context.Context) error {
	if r.cell.Test.Own() {
		if err := r.runOwn(ctx); err != nil {
			return err
		}
	}
	if file, ok := r.cell.Test.UpstreamFile(); ok {
		return r.runUpstream(ctx, file)
	}
	return nil
}

// runOwn runs envctl's image-volume suite (imagevolume).
func (r *run) runOwn(ctx context.Context) error {
	_, _, volume, workload := r.testRefs()
	r.opts.step("running %s", profiles.TestImageVolume)
	cpu0, cpuErr := r.cpuTime(ctx)
	start := time.Now()
	cfg := imagevolume.Config{VolumeImage: volume, WorkloadImage: workload, Dir: "/root/envctl-test", Serial: r.opts.SerialCases}
	if r.opts.TestImages != UpstreamImages {
		// The local images give every case a volume image of its own.
		c := testimages.CaseArtifactRepos
		cfg.Volumes = imagevolume.Volumes{Lifecycle: volume, SubPath: testimages.GuestRef(c.SubPath),
			Invalid: testimages.GuestRef(c.Invalid), NotPulled: testimages.GuestRef(c.NotPulled)}
	}
	res, err := imagevolume.Run(ctx, r.machine.SSH, cfg)
	took := time.Since(start)
	r.sub("test.envctl", took)
	if cpu1, err1 := r.cpuTime(ctx); cpuErr == nil && err1 == nil {
		r.testCPU = report.NewCPUUse(cpu1-cpu0, took, r.cell.VM.CPUs)
	}
	if res.SideBySide {
		r.notes = append(r.notes, "the image-volume cases ran side by side (--serial-cases runs them one after another)")
	}
	r.own, r.tested = res, true
	return fault.AsInfra(err)
}

// cpuTime is the guest's CPU time so far; a hypervisor that cannot say
// costs the report its test_cpu, not the run.
func (r *run) cpuTime(ctx context.Context) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	used, err := r.machine.CPUTime(ctx)
	if err != nil {
		r.log().Debug("guest CPU time", "env", r.started.Env, "err", err)
	}
	return used, err
}

// runUpstream runs a bats file of the locked CRI-O tree (bats). Its steps
// count only when bats ran to the end; its output is kept either way.
func (r *run) runUpstream(ctx context.Context, file string) error {
	r.opts.step("running upstream's test/%s from CRI-O %s's own tree", file, r.cell.Versions()["cri-o"])
	start := time.Now()
	out, err := bats.Run(ctx, r.machine.SSH, r.upstreamConfig(file))
	r.sub("test.upstream", time.Since(start))
	if err != nil {
		out.Steps = nil
		r.upstream = out
		return fault.AsInfra(err)
	}
	r.upstream, r.tested = out, true
	return nil
}

// steps are every suite's steps, envctl's first.
func (r *run) steps() []report.Step {
	if len(r.upstream.Steps) == 0 {
		return r.own.Steps
	}
	return append(slices.Clone(r.own.Steps), r.upstream.Steps...)
}

// artifacts are the suites' files worth keeping with a failure.
func (r *run) artifacts() map[string]string {
	out := maps.Clone(r.own.Artifacts)
	if r.upstream.Output != "" {
		if out == nil {
			out = map[string]string{}
		}
		out["upstream-bats.txt"] = r.upstream.Output
	}
	return out
}

// checkUpstreamFile refuses, before any VM, a bats file that the locked
// CRI-O test tree does not have.
func (r *run) checkUpstreamFile() error {
	file, ok := r.cell.Test.UpstreamFile()
	if !ok {
		return nil
	}
	tree, ok := r.tools[lock.ToolCRIOTests].Binaries[artifacts.CRIOTestTar]
	if !ok {
		return nil
	}
	names, err := artifacts.TarNames(tree, ".bats")
	if err != nil {
		return fault.Infraf("--test upstream:%s: read CRI-O's test tree: %w", file, err)
	}
	if slices.Contains(names, file) {
		return nil
	}
	slices.Sort(names)
	return fault.Inputf("--test upstream:%s: CRI-O %s's test tree has no %s; its bats files are %s", file, r.cell.Versions()["cri-o"], file, strings.Join(names, ", "))
}

// upstreamNames are the image names the locked CRI-O tree's helpers
// import (common.sh's IMAGES) and the artifact oci_volumes.bats pulls.
func (r *run) upstreamNames() testimages.Names {
	if r.names == nil {
		n := r.readUpstreamNames()
		r.names = &n
	}
	return *r.names
}

func (r *run) readUpstreamNames() testimages.Names {
	n := testimages.UpstreamNames
	if tree, ok := r.tools[lock.ToolCRIOTests].Binaries[artifacts.CRIOTestTar]; ok {
		if common, err := artifacts.ReadTarFile(tree, "common.sh"); err == nil {
			if imgs := testimages.ParseImagesArray(string(common)); len(imgs) > 0 {
				n.Workloads = nil
				for _, img := range imgs {
					if strings.Contains(img, "/pause:") {
						n.Pause = img
					} else {
						n.Workloads = append(n.Workloads, img)
					}
				}
			}
		}
	}
	return n
}

func (r *run) upstreamConfig(file string) bats.Config {
	stack := crio.Stack{Parts: r.parts}
	tool := func(name, file string) guest.Upload {
		fl := r.tools[name]
		p := fl.Binaries[file]
		return guest.Upload{Local: p, SHA256: fl.Digests[p]}
	}
	return bats.Config{
		File: file, Dir: "/root/envctl-upstream",
		Tree: tool(lock.ToolCRIOTests, artifacts.CRIOTestTar), Copyimg: tool(lock.ToolCRIOTests, artifacts.Copyimg), Bats: tool(lock.ToolBats, artifacts.BatsDeb),
		MirrorConf: r.upstreamNames().MirrorConf(),
		CRIO:       crio.BinDir + "/crio", Pinns: crio.BinDir + "/pinns", Crictl: crio.BinDir + "/crictl",
		Conmon: stack.ConmonPath(), Runtime: stack.Runtime(), RuntimePath: stack.RuntimePath(), CNIPluginDir: stack.CNIPluginDir(),
	}
}

// suites are the suites that ran, each tallied.
func (r *run) suites() []report.SuiteResult {
	var out []report.SuiteResult
	if r.cell.Test.Own() {
		out = append(out, report.Tally(report.SuiteEnvctl, "", r.own.Steps))
	}
	if file, ok := r.cell.Test.UpstreamFile(); ok && r.upstream.Steps != nil {
		out = append(out, report.Tally(report.SuiteUpstream, file, r.upstream.Steps))
	}
	return out
}

func (r *run) failed() bool {
	for _, s := range r.steps() {
		if s.Status == report.Fail {
			return true
		}
	}
	return false
}
