//go:build e2e

package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/envctl/envctl/images/cache"
)

// TestE2EWarmStart: the first run of a lock boots, saves the post-boot
// state of its image and VM shape, installs and saves its verified guest;
// the second restores that (no boot, no install), re-runs the drift check
// by digest and passes; another component version takes no warm state
// but starts from the shared post-boot state, gets the artifact disk
// hot-plugged, installs and passes; with the saves damaged the run boots
// cold and still passes. The VM shape is this test's own, so its keys are
// too.
func TestE2EWarmStart(t *testing.T) {
	body := strings.Replace(matrixBase, "disk: 10GiB", "disk: 11GiB", 1)
	profile := writeProfile(t, "e2e-warm", body)
	mustLock(t, profile)
	// This test's key: no state of an earlier run may make the first run
	// warm, and none is left for a later one.
	dropWarmStates(t, "e2e-warm")
	dropWarmStates(t, "e2e-warm-other")
	t.Cleanup(func() { dropWarmStates(t, "e2e-warm"); dropWarmStates(t, "e2e-warm-other") })
	up := func(p string) upReport {
		t.Helper()
		out, errOut, code := envctl(t, "up", p, "-o", "json")
		r := parseReport(t, out)
		if code != 0 || r.Verdict != "pass" {
			t.Fatalf("up %s: exit %d verdict %q error %q\n%s", p, code, r.Verdict, r.Error, errOut)
		}
		for _, c := range r.Components {
			if !c.Verified {
				t.Errorf("component %s not verified: %+v", c.Name, c)
			}
		}
		return r
	}
	cold := up(profile)
	if !strings.HasPrefix(cold.Start, "cold: no saved state") || phaseSeconds(cold.Phases, "save") == 0 ||
		!strings.Contains(cold.Start, "saved a post-boot state") || phaseSeconds(cold.Phases, "boot.save") == 0 {
		t.Fatalf("first run: start %q, phases %+v, notes %v", cold.Start, cold.Phases, cold.Notes)
	}
	// The saving run's teardown left every sealed file as sealed: the
	// first restore after the save hashes nothing (no second name of a
	// sealed file stayed in libvirt's pool).
	for _, dir := range append(savedStates(t, "warm", "e2e-warm"), savedStates(t, "boot", "e2e-warm")...) {
		assertStampsHold(t, dir)
	}
	warm := up(profile)
	if !strings.HasPrefix(warm.Start, "warm: restored") && strings.Contains(warm.Start, "did not answer") {
		// The TCG flake that run 3 also meets (a restored guest that
		// never answers): the state was removed, and the fallback saved
		// another; the claim is tried once more on that one.
		t.Logf("the warm restore did not answer (%s, notes %v); once more from the state the fallback saved", warm.Start, warm.Notes)
		warm = up(profile)
	}
	if !strings.HasPrefix(warm.Start, "warm: restored") || phaseSeconds(warm.Phases, "install.upload") != 0 {
		t.Errorf("second run: start %q, phases %+v", warm.Start, warm.Phases)
	}
	// The cold run hashed the installed files and asked every version in
	// the guest; the restored one is proven by its seal and the check it
	// passed before it was saved, and asked the running CRI-O. Both say
	// the same versions and commits. Both ran the cases side by side.
	if cold.VerifiedBy != "digests" || warm.VerifiedBy != "seal+record" {
		t.Errorf("verified by %q, then %q; want digests, then seal+record", cold.VerifiedBy, warm.VerifiedBy)
	}
	if c, w := fmt.Sprint(cold.Components), fmt.Sprint(warm.Components); c != w {
		t.Errorf("the warm run's components differ from the cold run's:\n%s\n%s", w, c)
	}
	if !hasNote(cold, "cases ran side by side") || !hasNote(warm, "cases ran side by side") || len(warm.Steps) != 17 {
		t.Errorf("the cases did not run side by side (%d steps): %v", len(warm.Steps), warm.Notes)
	}
	// Both say how busy the guest was while the cases ran, from libvirt's
	// count of the domain's CPU time.
	for _, r := range []upReport{cold, warm} {
		if c := r.TestCPU; c == nil || c.VCPUs != 2 || c.Seconds <= 0 || c.Busy <= 0 || c.Busy > 1.5 || c.Wall <= 0 {
			t.Errorf("%s run: test_cpu %+v, want the CPU time of 2 vCPUs over the test", r.Start, c)
		}
	}
	t.Logf("cold up %.0fs (boot %.1fs, install %.1fs, save %.1fs); warm up %.0fs (boot %.1fs)", cold.Seconds,
		phaseSeconds(cold.Phases, "boot"), phaseSeconds(cold.Phases, "install"), phaseSeconds(cold.Phases, "save"), warm.Seconds, phaseSeconds(warm.Phases, "boot"))
	writeBenchNote(t, "warm", map[string]float64{"cold": cold.Seconds, "warm": warm.Seconds, "warm_boot": phaseSeconds(warm.Phases, "boot")})

	// Another crictl: another key, a cold boot.
	other := writeProfile(t, "e2e-warm-other", strings.Replace(body, `cri-tools: {version: "1.34.0"}`, `cri-tools: {version: "1.36.0"}`, 1))
	mustLock(t, other)
	r := up(other)
	if hasNote(r, "the post-boot state did not restore") && hasNote(r, "SSH did not answer") {
		// Seen once in about 25 restores under TCG here: a restored guest
		// that never answers. The run fell back to a boot that saved the
		// post-boot state anew; the claim is tried once more on that one.
		t.Logf("the post-boot restore did not answer (%v); once more from the state the fallback saved", r.Notes)
		dropSaved(t, "warm", "e2e-warm-other")
		r = up(other)
		// The removed post-boot state took with it the warm state of
		// e2e-warm that was saved on top of it (a warm state needs its
		// post-boot state's disk): save that one anew, for the damage
		// below.
		up(profile)
	}
	if !strings.HasPrefix(r.Start, "post-boot: no saved state") || phaseSeconds(r.Phases, "install.upload") == 0 ||
		phaseSeconds(r.Phases, "boot.attach") == 0 || hasNote(r, "files went in") {
		t.Errorf("changed version: start %q, phases %+v, notes %v", r.Start, r.Phases, r.Notes)
	}
	t.Logf("changed version from the post-boot state: up %.0fs (boot %.1fs with the hot-plug %.1fs, install %.1fs)", r.Seconds,
		phaseSeconds(r.Phases, "boot"), phaseSeconds(r.Phases, "boot.attach"), phaseSeconds(r.Phases, "install"))

	// Damage the saved memory images of this test's keys (the warm state
	// and the post-boot state): both restores fail, both states are
	// dropped, and the run boots cold and passes.
	states := append(savedStates(t, "warm", "e2e-warm"), append(savedStates(t, "boot", "e2e-warm"), savedStates(t, "boot", "e2e-warm-other")...)...)
	if len(states) < 2 {
		out, _, _ := envctl(t, "cache", "ls", "-o", "json")
		t.Fatalf("saved states of e2e-warm in the cache: %v\nrun 1: %s %v\nrun 2: %s %v\nrun 3: %s %v\ncache ls: %s",
			states, cold.Start, cold.Notes, warm.Start, warm.Notes, r.Start, r.Notes, out)
	}
	for _, dir := range states {
		if err := os.WriteFile(filepath.Join(dir, "mem.save"), []byte("not a libvirt save"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r = up(profile)
	if !strings.HasPrefix(r.Start, "cold: the saved state did not restore") || !hasNote(r, "the post-boot state did not restore") ||
		!strings.Contains(r.Start, "saved a post-boot state") {
		t.Errorf("damaged saves: start %q, notes %v", r.Start, r.Notes)
	}
	assertClean(t)
}

// assertStampsHold checks a sealed directory's files against the stamps
// its manifest recorded: a moved stamp means the next check rehashes.
func assertStampsHold(t *testing.T, dir string) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, cache.ManifestName))
	if err != nil {
		t.Fatal(err)
	}
	var m cache.Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for rel, want := range m {
		fi, err := os.Stat(filepath.Join(dir, rel))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
		} else if got := cache.StampOf(fi); got != want.Stamp {
			t.Errorf("%s/%s: stamp %+v, sealed %+v: the next restore rehashes it", filepath.Base(dir), rel, got, want.Stamp)
		}
	}
}

func hasNote(r upReport, s string) bool {
	for _, n := range r.Notes {
		if strings.Contains(n, s) {
			return true
		}
	}
	return false
}

// savedStates lists the saved guests of a kind (warm or boot) that a
// profile's runs saved (`cache ls`).
func savedStates(t testing.TB, kind, profile string) []string {
	t.Helper()
	out, _, _ := envctl(t, "cache", "ls", "-o", "json")
	var entries []struct{ Kind, Name, Path string }
	_ = json.Unmarshal([]byte(out), &entries)
	var dirs []string
	for _, e := range entries {
		if e.Kind != kind {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(e.Path, "warm.json")); err == nil && strings.Contains(string(b), `"profile": "`+profile+`"`) {
			dirs = append(dirs, e.Path)
		}
	}
	return dirs
}

// dropWarmStates removes a profile's saved guests, warm and post-boot.
func dropWarmStates(t testing.TB, profile string) {
	dropSaved(t, "warm", profile)
	dropSaved(t, "boot", profile)
}

// dropSaved removes a profile's saved guests of one kind.
func dropSaved(t testing.TB, kind, profile string) {
	for _, dir := range savedStates(t, kind, profile) {
		_ = os.RemoveAll(dir)
	}
}

// TestE2EKilledRestoredRunIsReaped: a run restored from a warm state is not
// AUTODESTROY (libvirt has no such restore flag), so envctl killed
// outright leaves its VM running under the saved name. The next run with
// that lock finds the name taken by a dead run of this state directory,
// removes what that run left (as `envctl gc` does), restores and passes,
// and nothing is left. With no next run, the restored guest's dead-man
// timer powers it off within the killed run's --timeout: its domain is
// gone without any gc.
func TestE2EKilledRestoredRunIsReaped(t *testing.T) {
	parallelGroup(t)
	body := strings.Replace(matrixBase, "disk: 10GiB", "disk: 15GiB", 1)
	profile := writeProfile(t, "e2e-reap", body)
	mustLock(t, profile)
	dropWarmStates(t, "e2e-reap")
	t.Cleanup(func() { dropWarmStates(t, "e2e-reap") })
	r := newRunner(t)
	if _, errOut, code := r.run("up", profile); code != 0 {
		t.Fatalf("first up: exit %d\n%s", code, errOut)
	}
	s := r.start("running image-volume-lifecycle", "up", profile)
	if s.domain == "" || !strings.Contains(s.stderr.String(), "warm start") {
		t.Fatalf("the second run was not a warm start:\n%s", s.stderr)
	}
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	s.wait(t, time.Minute)
	time.Sleep(2 * time.Second)
	if !strings.Contains(virsh("list", "--name"), s.domain) {
		t.Logf("note: %s did not outlive its killed envctl (libvirt may have gained an autodestroy restore)", s.domain)
	}
	out, errOut, code := r.run("up", profile, "-o", "json")
	rep := parseReport(t, out)
	if code != 0 || rep.Verdict != "pass" || !strings.HasPrefix(rep.Start, "warm: ") {
		t.Fatalf("up after the kill: exit %d verdict %q start %q notes %v\n%s", code, rep.Verdict, rep.Start, rep.Notes, errOut)
	}
	if !hasNote(rep, "taken by a run that died") {
		t.Errorf("no note of the reaped run: %v", rep.Notes)
	}
	if strings.Contains(virsh("list", "--all", "--name"), s.domain) {
		t.Errorf("%s is still there: %s", s.domain, virsh("list", "--all"))
	}
	r.noEnvsLeft(t)

	// Without a next run: the restored guest's dead-man timer powers it
	// off within the run's --timeout, and its domain is gone with no gc.
	const timeout = 100 * time.Second
	s = r.start("running image-volume-lifecycle", "up", profile, "--timeout", timeout.String())
	if s.domain == "" || !strings.Contains(s.stderr.String(), "warm start") {
		t.Fatalf("the dead-man run was not a warm start:\n%s", s.stderr)
	}
	killed := time.Now()
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	s.wait(t, time.Minute)
	deadline := killed.Add(timeout + time.Minute)
	for strings.Contains(virsh("list", "--all", "--name"), s.domain) {
		if time.Now().After(deadline) {
			t.Fatalf("%s still runs %s after its envctl was killed (--timeout %s): %s", s.domain, time.Since(killed).Round(time.Second), timeout, virsh("list", "--all"))
		}
		time.Sleep(5 * time.Second)
	}
	t.Logf("%s powered itself off %s after its envctl was killed (--timeout %s)", s.domain, time.Since(killed).Round(time.Second), timeout)
	if _, errOut, code := r.run("gc"); code != 0 {
		t.Errorf("gc: exit %d\n%s", code, errOut)
	}
	r.noEnvsLeft(t)
}
