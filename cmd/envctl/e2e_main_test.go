//go:build e2e

package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// preexisting holds the envctl domains and volumes that were on this host
// before the suite started: another run's leftovers are not this run's
// leaks, and this run must not fail, or act, because of them.
var preexisting map[string]bool

// TestMain gives the e2e suite a state directory of its own, so records,
// verdicts and the pool of an earlier or concurrent run never leak into
// it, and removes that directory's pool at the end.
func TestMain(m *testing.M) {
	state := ""
	if os.Getenv("ENVCTL_BIN") != "" && os.Getenv("ENVCTL_STATE_DIR") == "" {
		dir, err := os.MkdirTemp("", "envctl-e2e-state-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: state directory:", err)
			os.Exit(2)
		}
		state = dir
		_ = os.Setenv("ENVCTL_STATE_DIR", state)
	}
	// The shipped profiles run from a copy, locks included: a run that
	// re-pins a lock whose image the world moved past (README,
	// Reproducibility) rewrites the copy, never the committed lock.
	profilesCopy := ""
	if os.Getenv("ENVCTL_BIN") != "" && os.Getenv("ENVCTL_PROFILES_DIR") == "" {
		dir, err := copyProfiles()
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e: profiles:", err)
			os.Exit(2)
		}
		profilesCopy = dir
		_ = os.Setenv("ENVCTL_PROFILES_DIR", dir)
	}
	preexisting = map[string]bool{}
	for _, l := range witness() {
		preexisting[l] = true
	}
	// QEMU never runs as root, for any test: a system daemon runs it as
	// its own user, a session daemon as the user who asked.
	var watch *rootQEMU
	if os.Getenv("ENVCTL_BIN") != "" {
		watch = watchRootQEMU()
	}
	code := m.Run()
	if watch != nil {
		if seen := watch.Stop(); len(seen) > 0 {
			fmt.Fprintf(os.Stderr, "e2e: QEMU ran as root during the suite:\n%s\n", strings.Join(seen, "\n"))
			code = 1
		}
	}
	for _, f := range suiteCleanup {
		f()
	}
	if profilesCopy != "" {
		_ = os.RemoveAll(profilesCopy)
	}
	// Tests' own state directories are gone by now: their pools go,
	// whoever made the suite's state directory (.ci/run removes the pool
	// of its own). The suite's pool goes too when TestMain made it.
	removeTestPools(state)
	if state != "" {
		_ = os.RemoveAll(state)
	}
	os.Exit(code)
}

// suiteCleanup removes what tests made for the whole suite.
var suiteCleanup []func()

// copyProfiles copies the shipped profiles and their locks into a new
// temporary directory.
func copyProfiles() (string, error) {
	dir, err := os.MkdirTemp("", "envctl-e2e-profiles-")
	if err != nil {
		return "", err
	}
	for _, pattern := range []string{"*.yaml", "*.lock"} {
		files, _ := filepath.Glob(filepath.Join("..", "..", "profiles", pattern))
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				return "", err
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
				return "", err
			}
		}
	}
	return dir, nil
}

// shippedLock is the committed lock of a shipped profile.
func shippedLock(profile string) string {
	return filepath.Join("..", "..", "profiles", profile+".lock")
}

// witness lists the envctl domains and the disk and seed volumes that
// this suite's runs own, one "domain NAME" or "volume POOL LINE" entry
// each: those of state directories under the temporary directory (the
// suite's own, and its tests'). A run of another state directory on the
// same host is not this suite's business.
func witness() []string {
	tmp := os.TempDir() + "/"
	var seen []string
	for _, d := range strings.Fields(virsh("list", "--all", "--name")) {
		if !strings.HasPrefix(d, "envctl-") {
			continue
		}
		m := ownerRE.FindStringSubmatch(virsh("dumpxml", d))
		if m == nil || strings.HasPrefix(m[1], tmp) {
			seen = append(seen, "domain "+d)
		}
	}
	for _, pool := range strings.Fields(virsh("pool-list", "--all", "--name")) {
		if !strings.HasPrefix(pool, "envctl") {
			continue
		}
		for _, l := range strings.Split(virsh("vol-list", pool), "\n") {
			if (strings.Contains(l, ".qcow2") || strings.Contains(l, ".iso")) && (strings.Contains(l, tmp) || strings.Contains(l, "/var/lib/libvirt/images/")) {
				seen = append(seen, "volume "+pool+" "+strings.TrimSpace(l))
			}
		}
	}
	return seen
}

// ownerRE reads the state directory from envctl's domain metadata.
var ownerRE = regexp.MustCompile(`<(?:envctl:)?owner>([^<]*)</(?:envctl:)?owner>`)

// removeTestPools destroys and undefines the envctl pools that lie in the
// suite's state directory, or in a test's temporary directory that is gone
// by now: they would otherwise pile up in libvirt, run after run. An
// empty state removes only the latter.
func removeTestPools(state string) {
	for _, pool := range strings.Fields(virsh("pool-list", "--all", "--name")) {
		if !strings.HasPrefix(pool, "envctl") {
			continue
		}
		m := regexp.MustCompile(`<path>([^<]*)</path>`).FindStringSubmatch(virsh("pool-dumpxml", pool))
		if m == nil {
			continue
		}
		_, err := os.Stat(m[1])
		if state != "" && strings.HasPrefix(m[1], state+"/") || strings.HasPrefix(m[1], os.TempDir()+"/") && os.IsNotExist(err) {
			virsh("pool-destroy", pool)
			virsh("pool-undefine", pool)
		}
	}
}
