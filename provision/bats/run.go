package bats

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/guest"
	"github.com/envctl/envctl/provision/report"
)

// Guest is what running an upstream file needs from a booted VM;
// *guest.Client implements it over SSH.
type Guest interface {
	Output(ctx context.Context, cmd string) (string, error)
	Split(ctx context.Context, cmd string) (stdout, combined string, err error)
	WriteFile(ctx context.Context, path string, data []byte, mode os.FileMode) error
	UploadVerified(ctx context.Context, files []guest.Upload, mode os.FileMode) error
}

// Config is what a run of an upstream bats file needs.
type Config struct {
	// File is the bats file in CRI-O's test/ directory.
	File string
	// Tree is CRI-O's test/ directory as a tar, Copyimg the copyimg built
	// from the same tree, Bats the bats package: each with the digest the
	// upload is checked against (Remote is set here).
	Tree, Copyimg, Bats guest.Upload
	// MirrorConf is the registries.conf drop-in that maps upstream's image
	// names to envctl's test registry.
	MirrorConf string
	// The installed stack, as upstream's helpers take it.
	CRIO, Pinns, Crictl, Conmon string
	Runtime, RuntimePath        string
	CNIPluginDir                string
	// Dir is the scratch directory in the guest.
	Dir string
}

// Outcome is what a run found: one step per upstream test, the TAP it
// came from, and bats' whole output.
type Outcome struct {
	Steps  []report.Step
	TAP    TAP
	Output string
}

// MirrorDropIn is where the registries.conf drop-in goes.
const MirrorDropIn = "/etc/containers/registries.conf.d/50-envctl-upstream.conf"

// Run puts the tools into the guest, stops envctl's own CRI-O (upstream's
// helpers start a fresh one per test, on the same bridge name), imports
// upstream's images the way its test runner does (get_images, through
// copyimg), runs the file with bats from inside test/, and reads the TAP
// lines. bats exits 0 when every test skipped, so only the TAP counts.
// An error means the file could not run; failed tests are in the steps.
func Run(ctx context.Context, g Guest, cfg Config) (Outcome, error) {
	var res Outcome
	dir := cfg.Dir
	test := path.Join(dir, "test")
	cfg.Tree.Remote, cfg.Copyimg.Remote, cfg.Bats.Remote = path.Join(dir, "crio-test.tar"), path.Join(dir, "copyimg"), path.Join(dir, "bats.deb")
	if _, err := g.Output(ctx, "mkdir -p "+dir); err != nil {
		return res, fmt.Errorf("upstream suite: %w", err)
	}
	if err := g.UploadVerified(ctx, []guest.Upload{cfg.Tree, cfg.Copyimg, cfg.Bats}, 0o755); err != nil {
		return res, fmt.Errorf("upstream suite: upload its tools: %w", err)
	}
	if err := g.WriteFile(ctx, MirrorDropIn, []byte(cfg.MirrorConf), 0o644); err != nil {
		return res, fmt.Errorf("upstream suite: %w", err)
	}
	setup := strings.Join([]string{
		"dpkg -i " + cfg.Bats.Remote + " >/dev/null",
		"rm -rf " + test, "mkdir -p " + test,
		"tar -C " + test + " -xf " + cfg.Tree.Remote,
		// Upstream's helpers start their own crio on the cni0 bridge.
		"systemctl stop crio", "(ip link del cni0 2>/dev/null || true)",
	}, " && ")
	if out, err := g.Output(ctx, setup); err != nil {
		return res, fmt.Errorf("upstream suite: set up the guest: %w\n%s", err, report.Trim(out, 1500))
	}
	env := cfg.env()
	if out, err := g.Output(ctx, fmt.Sprintf("cd %s && env %s bash -c '. ./common.sh && get_images'", test, env)); err != nil {
		return res, fmt.Errorf("upstream suite: import upstream's images with copyimg (get_images): %w\n%s", err, report.Trim(out, 1500))
	}
	// Serial (no --jobs): bats needs GNU parallel for more, and without it
	// runs nothing. --timing adds each test's time to its TAP line.
	stdout, combined, err := g.Split(ctx, fmt.Sprintf("cd %s && env %s bats --tap --timing %s", test, env, cfg.File))
	res.Output = combined
	var exit *guest.ExitError
	if err != nil && (!errors.As(err, &exit) || ctx.Err() != nil) {
		return res, fmt.Errorf("upstream suite: bats %s: %w", cfg.File, err)
	}
	res.TAP = ParseTAP(stdout)
	if cerr := res.TAP.Complete(); cerr != nil {
		return res, fault.Infraf("upstream suite: %s: %v\n%s", cfg.File, cerr, report.Trim(combined, 1500))
	}
	res.Steps = Steps(res.TAP)
	return res, nil
}

// env is upstream's environment (common.sh) for the installed stack.
func (cfg Config) env() string {
	vars := []string{
		"PATH=" + path.Dir(cfg.RuntimePath) + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
		"CRIO_BINARY_PATH=" + cfg.CRIO,
		"PINNS_BINARY_PATH=" + cfg.Pinns,
		"CRICTL_BINARY=" + cfg.Crictl,
		"CONMON_BINARY=" + cfg.Conmon,
		"CONTAINER_DEFAULT_RUNTIME=" + cfg.Runtime,
		"CONTAINER_CNI_PLUGIN_DIR=" + cfg.CNIPluginDir,
		"STORAGE_OPTIONS=--storage-driver=overlay",
		"ARTIFACTS_PATH=" + path.Join(cfg.Dir, "artifacts"),
		"COPYIMG_BINARY=" + cfg.Copyimg.Remote,
		"JOBS=1",
	}
	for i, v := range vars {
		vars[i] = strconv.Quote(v)
	}
	return strings.Join(vars, " ")
}

// timingRE is what --timing appends: " in 123ms" (bats 1.11's TAP), or
// " # in 123 ms" (its tap13 style), perhaps with a timeout note.
var timingRE = regexp.MustCompile(`\s+(?:#\s*)?in (\d+) ?ms(\s+#.*)?$`)

// Steps turns TAP results into report steps of the upstream suite: pass,
// fail with bats' output, skip with its reason.
func Steps(t TAP) []report.Step {
	var out []report.Step
	for _, r := range t.Tests {
		name, d := r.Name, time.Duration(0)
		if m := timingRE.FindStringSubmatch(name); m != nil {
			ms, _ := strconv.Atoi(m[1])
			name, d = strings.TrimSpace(name[:len(name)-len(m[0])]), time.Duration(ms)*time.Millisecond
		}
		s := report.Step{Name: name, Status: r.Status, Duration: d, Suite: report.SuiteUpstream, Output: r.Output}
		switch r.Status {
		case report.Skip:
			s.Message = cmp.Or(r.Reason, "no reason given")
		case report.Fail:
			s.Message = report.FirstLine(lastMeaningful(r.Output))
		}
		out = append(out, report.NewStep(s))
	}
	return out
}

// lastMeaningful is the line of bats' output that says what failed: the
// one after "(in test file …)", else the first line.
func lastMeaningful(out string) string {
	lines := strings.Split(strings.TrimSpace(out), "\n")
	for i, l := range lines {
		if strings.Contains(l, "(in test file") && i+1 < len(lines) {
			return strings.TrimSpace(lines[i+1])
		}
	}
	return out
}
