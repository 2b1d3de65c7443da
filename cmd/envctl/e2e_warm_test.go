//go:build e2e

package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestE2EWarmStart: the first run of a lock saves its verified guest; the
// second restores it (no boot, no install), re-runs the drift check by
// digest and passes; another component version boots cold; a damaged
// save is dropped for a cold boot that still passes. The VM shape is this
// test's own, so its key is too.
func TestE2EWarmStart(t *testing.T) {
	body := strings.Replace(matrixBase, "disk: 10GiB", "disk: 11GiB", 1)
	profile := writeProfile(t, "e2e-warm", body)
	mustLock(t, profile)
	// This test's key: no state of an earlier run may make the first run
	// warm, and none is left for a later one.
	dropWarmStates(t, "e2e-warm")
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
	if !strings.HasPrefix(cold.Start, "cold: no saved state") || phaseSeconds(cold.Phases, "save") == 0 {
		t.Fatalf("first run: start %q, phases %+v, notes %v", cold.Start, cold.Phases, cold.Notes)
	}
	warm := up(profile)
	if !strings.HasPrefix(warm.Start, "warm: restored") || phaseSeconds(warm.Phases, "install.upload") != 0 {
		t.Errorf("second run: start %q, phases %+v", warm.Start, warm.Phases)
	}
	t.Logf("cold up %.0fs (boot %.1fs, install %.1fs, save %.1fs); warm up %.0fs (boot %.1fs)", cold.Seconds,
		phaseSeconds(cold.Phases, "boot"), phaseSeconds(cold.Phases, "install"), phaseSeconds(cold.Phases, "save"), warm.Seconds, phaseSeconds(warm.Phases, "boot"))
	writeBenchNote(t, "warm", map[string]float64{"cold": cold.Seconds, "warm": warm.Seconds, "warm_boot": phaseSeconds(warm.Phases, "boot")})

	// Another crictl: another key, a cold boot.
	other := writeProfile(t, "e2e-warm-other", strings.Replace(body, `cri-tools: {version: "1.34.0"}`, `cri-tools: {version: "1.36.0"}`, 1))
	mustLock(t, other)
	if r := up(other); !strings.HasPrefix(r.Start, "cold:") {
		t.Errorf("changed version: start %q", r.Start)
	}

	// Damage the saved memory image of this test's key: restore fails,
	// the state is dropped, and the run boots cold and passes.
	states := warmStates(t, "e2e-warm")
	if len(states) == 0 {
		t.Fatal("no warm state of e2e-warm in the cache")
	}
	for _, dir := range states {
		if err := os.WriteFile(filepath.Join(dir, "mem.save"), []byte("not a libvirt save"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := up(profile)
	if !strings.HasPrefix(r.Start, "cold: the saved state did not restore") {
		t.Errorf("damaged save: start %q", r.Start)
	}
	assertClean(t)
}

// warmStates lists the warm state directories of a profile (`cache ls`).
func warmStates(t testing.TB, profile string) []string {
	t.Helper()
	out, _, _ := envctl(t, "cache", "ls", "-o", "json")
	var entries []struct{ Kind, Name, Path string }
	_ = json.Unmarshal([]byte(out), &entries)
	var dirs []string
	for _, e := range entries {
		if e.Kind != "warm" {
			continue
		}
		if b, err := os.ReadFile(filepath.Join(e.Path, "warm.json")); err == nil && strings.Contains(string(b), `"profile": "`+profile+`"`) {
			dirs = append(dirs, e.Path)
		}
	}
	return dirs
}

func dropWarmStates(t testing.TB, profile string) {
	for _, dir := range warmStates(t, profile) {
		_ = os.RemoveAll(dir)
	}
}
