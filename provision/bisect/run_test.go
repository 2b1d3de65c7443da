package bisect_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/bisect"
	"github.com/envctl/envctl/provision/cellrun"
	"github.com/envctl/envctl/provision/cellrun/cellruntest"
)

const profileYAML = `name: p
source: gomod
components:
  cri-o:     {version: "1.34.0"}
  cri-tools: {version: "1.37.0"}
  runtime:   {name: runc, version: "1.3.6"}
  conmon:    {version: "2.1.6", source: package}
  cni-plugins: {version: "1.1.1", source: package}
`

// fakeLock pins a derived profile's components without the network.
func fakeLock(ctx context.Context, p *profiles.Profile) (*lock.File, error) {
	c := cellruntest.Cell(p.Name, p.Components[profiles.RoleCRITools].Version)
	f := &lock.File{LockVersion: lock.FormatVersion, Profile: p.Name, Image: c.Image, Arch: "amd64"}
	lc := lock.Cell{Name: p.Name, Components: map[profiles.Role]string{}}
	for _, part := range c.Components {
		f.Artifacts = append(f.Artifacts, part.Artifact)
		lc.Components[part.Role] = part.Key()
	}
	f.Cells = []lock.Cell{lc}
	return f, nil
}

func runner(t *testing.T) (*bisect.Runner, *cellruntest.Harness, []bisect.Spec) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	_ = os.WriteFile(path, []byte(profileYAML), 0o644)
	base, err := profiles.LoadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	h := cellruntest.New(t)
	ledger := &cellrun.Ledger{Path: filepath.Join(dir, "verdicts.json"), MaxAge: time.Hour}
	h.Opts.Ledger = ledger
	var log []string
	r := &bisect.Runner{Base: base, Lock: fakeLock, Run: h.Opts, Ledger: ledger, Note: func(f string, a ...any) { log = append(log, f) }}
	good, _ := bisect.ParseSpec("cri-tools=1.37.0")
	bad, _ := bisect.ParseSpec("cri-tools=1.30.0")
	served := []string{"1.30.0", "1.34.0", "1.36.0", "1.37.0"}
	specs, err := bisect.Path(good, bad, nil, func(profiles.Role, string) ([]string, error) { return served, nil })
	if err != nil {
		t.Fatal(err)
	}
	return r, h, specs
}

// TestBisectWithPipelineRuns: over crictl 1.37 → 1.30 the pipeline finds
// 1.30.0 first bad and 1.34.0 last good, with the seed diagnosis; a second
// bisect reuses every verdict by lock hash and boots nothing.
func TestBisectWithPipelineRuns(t *testing.T) {
	r, h, path := runner(t)
	res := r.Bisect(context.Background(), path, false)
	if !res.Found || res.FirstBad != "cri-tools=1.30.0" || res.LastGood != "cri-tools=1.34.0" || res.Step != "cri-tools 1.34.0 → 1.30.0" {
		t.Fatalf("%+v", res)
	}
	if !strings.Contains(res.Diagnosis, "crictl v1.30.0 does not send CRI Mount.image") || !strings.Contains(res.FailingStep, "run container") {
		t.Errorf("diagnosis %q step %q", res.Diagnosis, res.FailingStep)
	}
	if len(res.Probes) != 4 || len(res.Probes) > res.Promised {
		t.Errorf("%d probes, promised %d", len(res.Probes), res.Promised)
	}
	booted := h.Driver.Opened
	again := r.Bisect(context.Background(), path, false)
	if !again.Found || again.FirstBad != res.FirstBad || h.Driver.Opened != booted {
		t.Errorf("second bisect: %+v, %d new connections", again, h.Driver.Opened-booted)
	}
	for _, p := range again.Probes {
		if !p.Cached {
			t.Errorf("probe %s ran again", p.Spec)
		}
	}
	h.AssertClean(t)
}

// TestBisectRunCommand: with a command as the probe, the environment is up
// while it runs (ENVCTL_ENV names it), its exit status decides as in git
// bisect run, and 125 is a skip.
func TestBisectRunCommand(t *testing.T) {
	r, h, path := runner(t)
	r.Command = []string{"sh", "-c", `test -n "$ENVCTL_ENV" && test -d "$ENVCTL_STATE_DIR/envs/$ENVCTL_ENV" || exit 200
grep -q '"lease": "'"$ENVCTL_STATE_DIR"'/leases/' "$ENVCTL_STATE_DIR/envs/$ENVCTL_ENV/env.json" || exit 201
case "$ENVCTL_SPEC" in *1.30.0*) exit 1;; esac`}
	res := r.Bisect(context.Background(), path, false)
	if !res.Found || res.FirstBad != "cri-tools=1.30.0" || res.LastGood != "cri-tools=1.34.0" {
		t.Fatalf("%+v", res)
	}
	for _, p := range res.Probes {
		if p.ExitStatus == nil || (p.Outcome != bisect.Good && p.Outcome != bisect.Bad) {
			t.Errorf("probe %+v", p)
		}
	}
	h.AssertClean(t)
	r2, h2, _ := runner(t)
	r2.Command = []string{"sh", "-c", "exit 125"}
	res = r2.Bisect(context.Background(), path, true)
	if res.Found || len(res.Candidates) != 3 {
		t.Errorf("all skipped: %+v", res)
	}
	r2.Command = []string{"sh", "-c", "exit 130"}
	res = r2.Bisect(context.Background(), path, true)
	if res.Found || res.Reason != "aborted" {
		t.Errorf("abort: %+v", res)
	}
	h2.AssertClean(t)
}

func TestDeriveAndBaseSpec(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "p.yaml")
	_ = os.WriteFile(path, []byte(profileYAML), 0o644)
	base, _ := profiles.LoadFile(path)
	spec, err := bisect.BaseSpec(catalog.Default(), base, []profiles.Role{profiles.RoleCRITools, profiles.RoleRuntime})
	if err != nil || spec.String() != "cri-tools=1.37.0,runtime=runc@1.3.6" {
		t.Fatalf("base spec %s %v", spec, err)
	}
	d := bisect.Derive(base, bisect.Spec{profiles.RoleRuntime: "crun@1.21", profiles.RoleCRITools: "1.30.0"})
	if rt := d.Components[profiles.RoleRuntime]; rt.Name != "crun" || rt.Version != "1.21" || d.Components[profiles.RoleCRITools].Version != "1.30.0" || base.Components[profiles.RoleCRITools].Version != "1.37.0" {
		t.Errorf("derived %+v (base %+v)", d.Components, base.Components)
	}
}
