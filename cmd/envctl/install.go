package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/compat"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision"
	"github.com/envctl/envctl/provision/artifacts"
	"github.com/envctl/envctl/provision/crio"
	"github.com/envctl/envctl/provision/env"
	"github.com/envctl/envctl/provision/fault"
	"github.com/envctl/envctl/provision/imagevolume"
	"github.com/envctl/envctl/provision/report"
	"github.com/envctl/envctl/provision/testimages"
)

func init() {
	predictFromBinariesHook = func(ctx context.Context, a *app, lf *lock.File, cell, test string) []compat.Finding {
		arts, err := lf.CellArtifacts(cell)
		if err != nil {
			return nil
		}
		f, err := a.fetcher()
		if err != nil {
			return nil
		}
		files := map[string]artifacts.Files{}
		for role, art := range arts {
			// plan never downloads or builds: only what is already cached.
			if fl, ok := f.Cached(lf, art); ok {
				files[role] = fl
			}
		}
		return skewFindings(arts, files, test)
	}
}

// prepared is a cell whose artifacts are on the host.
type prepared struct {
	cell      string
	artifacts map[string]lock.Artifact
	files     map[string]artifacts.Files
	versions  map[string]string
	criAPI    map[string]string
}

// prepareCell fetches or builds every artifact before any VM exists, reads
// their cri-api versions and predicts known failures.
func (a *app) prepareCell(ctx context.Context, p *profiles.Profile, lf *lock.File, cell string, f *upFlags, rep *report.Report) (*prepared, error) {
	arts, files, err := a.fetchCell(ctx, lf, cell)
	if err != nil {
		return nil, err
	}
	pr := &prepared{cell: cell, artifacts: arts, files: files, versions: map[string]string{}, criAPI: map[string]string{}}
	for _, role := range profiles.Roles {
		art, ok := arts[role]
		if !ok {
			continue
		}
		pr.versions[art.Component] = art.Version
		c := report.Component{Role: role, Name: art.Component, Locked: art.Version, Source: art.Source}
		for _, path := range files[role].Binaries {
			if v, err := artifacts.CRIAPIVersion(path); err == nil && v != "" {
				c.CRIAPI = strings.Fields(v)[0]
				pr.criAPI[art.Component] = v
			}
		}
		rep.Components = append(rep.Components, c)
	}
	if p.Test != "none" {
		rep.Warnings = append(compat.Predict(p.Test, pr.versions), skewFindings(arts, files, p.Test)...)
		for _, w := range rep.Warnings {
			fmt.Fprintf(a.stderr, "envctl: warning: predicted failure: %s\n", w)
		}
	}
	return pr, nil
}

// skewFindings predicts failures from the cri-api versions compiled into
// the binaries themselves (debug/buildinfo), which also covers file://
// builds whose version string says nothing useful.
func skewFindings(arts map[string]lock.Artifact, files map[string]artifacts.Files, test string) []compat.Finding {
	if test != imagevolume.Name {
		return nil
	}
	var out []compat.Finding
	if f := specSkew(arts, files); f != nil {
		out = append(out, *f)
	}
	for _, role := range []string{profiles.RoleCRITools, profiles.RoleCRIO} {
		for name, path := range files[role].Binaries {
			if name != "crictl" && name != "crio" {
				continue
			}
			v, err := artifacts.CRIAPIVersion(path)
			if err != nil || v == "" {
				continue
			}
			minor, approx, err := artifacts.CRIAPIMinor(v)
			if err != nil {
				continue
			}
			about := fmt.Sprintf("v0.%d", minor)
			if approx {
				about = "≈ " + about
			}
			art := arts[role]
			switch {
			case minor < 31 && name == "crictl":
				out = append(out, compat.Finding{Component: art.Component, Version: art.Version,
					Cause:   fmt.Sprintf("crictl %s was built with cri-api %s (%s), which lacks Mount.image; CRI-O expects it. The image-volume test will fail with `mount.HostPath is empty`", art.Version, about, strings.Fields(v)[0]),
					Fix:     "use cri-tools ≥ 1.31",
					Symptom: "mount.HostPath is empty"})
			case minor < 31 && name == "crio":
				out = append(out, compat.Finding{Component: art.Component, Version: art.Version,
					Cause:   fmt.Sprintf("crio %s was built with cri-api %s, which lacks Mount.image: it has no image volume support", art.Version, about),
					Fix:     "use CRI-O ≥ 1.31",
					Symptom: "mount.HostPath is empty"})
			case minor < 33:
				out = append(out, compat.Finding{Component: art.Component, Version: art.Version,
					Cause: fmt.Sprintf("%s %s was built with cri-api %s, which lacks Mount.image_sub_path; the sub-path case will fail", name, art.Version, about),
					Fix:   "use cri-tools and CRI-O ≥ 1.33 for sub paths"})
			}
		}
	}
	return out
}

// specSkew predicts an old crun refusing the OCI runtime-spec version the
// crio binary was built with (and so writes into every container config).
func specSkew(arts map[string]lock.Artifact, files map[string]artifacts.Files) *compat.Finding {
	rt := arts[profiles.RoleRuntime]
	if rt.Component != "crun" || catalog.Compare(rt.Version, "1.14.3") >= 0 {
		return nil
	}
	crioBin := files[profiles.RoleCRIO].Binaries["crio"]
	if crioBin == "" {
		return nil
	}
	spec, err := artifacts.RuntimeSpecVersion(crioBin)
	if err != nil || spec == "" || strings.HasPrefix(spec, "v1.0.") {
		return nil
	}
	crio := arts[profiles.RoleCRIO]
	return &compat.Finding{Component: "crun", Version: rt.Version,
		Cause:   fmt.Sprintf("crio %s was built with OCI runtime-spec %s and writes that ociVersion; crun %s accepts only 1.0.x (fixed in crun 1.14.3), so every container create fails with `unknown version specified`", crio.Version, spec, rt.Version),
		Fix:     "use crun ≥ 1.14.3, or runc",
		Symptom: "unknown version specified"}
}

// installAndTest installs the stack in the booted VM, checks it against the
// lock and runs the profile's test (unless --no-test).
func (a *app) installAndTest(ctx context.Context, m *provision.Machine, p *profiles.Profile, pr *prepared, f *upFlags, rep *report.Report) (err error) {
	stack := crio.Stack{Artifacts: pr.artifacts, Files: pr.files, RegistryHost: fmt.Sprintf("localhost:%d", testimages.GuestPort), PauseImage: testimages.GuestRef(testimages.PauseRepo)}
	volume, workload := testimages.GuestRef(testimages.ArtifactRepo), testimages.GuestRef(testimages.WorkloadRepo)
	if f.testImage == "upstream" {
		stack.RegistryHost, stack.PauseImage = "quay.io", "registry.k8s.io/pause:3.10"
		volume, workload = "quay.io/crio/artifact:v1", "quay.io/crio/busybox:latest"
	} else {
		start := time.Now()
		self, err := os.Executable()
		if err != nil {
			return fault.Infraf("find the envctl binary for the test images: %w", err)
		}
		reg, err := testimages.Serve(ctx, self)
		if err != nil {
			return fault.Infraf("test registry: %w", err)
		}
		defer reg.Close()
		fwd, err := m.SSH.ForwardRemote(fmt.Sprintf("127.0.0.1:%d", testimages.GuestPort), reg.Addr)
		if err != nil {
			return fault.AsInfra(err)
		}
		defer fwd.Close()
		rep.Phase("registry", time.Since(start))
		a.log.Debug("test registry", "host", reg.Addr, "guest", stack.RegistryHost)
	}

	results := ""
	defer func() {
		if err != nil || rep.Failed() {
			results = a.keepResults(ctx, m, f, rep, nil)
			rep.Results = results
		}
	}()

	a.step("installing %s", strings.Join(sortedKeys(pr.versions), ", "))
	t, err := crio.Install(ctx, m.SSH, stack)
	rep.Phase("upload", t.Upload)
	rep.Phase("install", t.Configure)
	rep.Phase("crio-start", t.Start)
	if err != nil {
		return err
	}
	start := time.Now()
	installed, verr := crio.Verify(ctx, m.SSH, stack)
	rep.Phase("verify", time.Since(start))
	for _, it := range installed {
		for i := range rep.Components {
			if rep.Components[i].Role == it.Role {
				rep.Components[i].Actual, rep.Components[i].Verified = it.Actual, it.OK
			}
		}
	}
	if verr != nil {
		return verr
	}
	a.step("versions verified against the lock: %s", rep.Versions())
	if f.noTest || p.Test == "none" {
		return nil
	}

	a.step("running %s", p.Test)
	start = time.Now()
	r := &imagevolume.Runner{SSH: m.SSH, Rep: rep, Cfg: imagevolume.Config{VolumeImage: volume, WorkloadImage: workload, Dir: "/root/envctl-test"}}
	if err := r.Run(ctx); err != nil {
		return fault.AsInfra(err)
	}
	rep.Phase("test", time.Since(start))
	if rep.Failed() {
		rep.Verdict = report.VerdictFail
		var outputs []string
		for _, s := range rep.Steps {
			if s.Status == report.Fail {
				outputs = append(outputs, s.Output, s.Message)
			}
		}
		all := strings.Join(outputs, "\n")
		rep.Diagnosis = compat.Diagnose(all, p.Test, pr.versions)
		for _, w := range rep.Warnings {
			if w.Symptom != "" && strings.Contains(all, w.Symptom) && !containsFinding(rep.Diagnosis, w) {
				rep.Diagnosis = append(rep.Diagnosis, w)
			}
		}
		a.keepResults(ctx, m, f, rep, r.Artifacts)
	} else {
		rep.Verdict = report.VerdictPass
	}
	return nil
}

func containsFinding(list []compat.Finding, f compat.Finding) bool {
	for _, x := range list {
		if x.Cause == f.Cause {
			return true
		}
	}
	return false
}

// keepResults saves what explains a failure: CRI-O's journal, crictl
// inspect output, the container configs and the serial console log.
func (a *app) keepResults(ctx context.Context, m *provision.Machine, f *upFlags, rep *report.Report, extra map[string]string) string {
	dir := rep.Results
	if dir == "" {
		dir = f.results
		if dir == "" {
			dir = filepath.Join(env.StateDir(), "results", m.Env.ID+"-"+time.Now().UTC().Format("20060102T150405"))
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			a.log.Warn("results directory", "dir", dir, "err", err)
			return ""
		}
		rep.Results = dir
	}
	files := map[string]string{}
	for k, v := range extra {
		files[k] = v
	}
	if m.SSH != nil {
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
		defer cancel()
		for name, cmd := range map[string]string{
			"crio-journal.log": "journalctl -u crio --no-pager -o short-precise",
			"crictl-ps.txt":    "crictl ps -a; crictl pods; crictl images",
			"crio-config.txt":  "cat /etc/crio/crio.conf.d/10-envctl.conf",
		} {
			if out, err := m.SSH.Output(cctx, cmd); err == nil || out != "" {
				files[name] = out
			}
		}
	}
	for name, content := range files {
		os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644)
	}
	_ = m.SaveConsole(filepath.Join(dir, "console.log"))
	names := sortedKeys(files)
	sort.Strings(names)
	a.log.Debug("kept results", "dir", dir, "files", names)
	return dir
}
