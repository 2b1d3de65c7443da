//go:build e2e

package main

import (
	"fmt"
	"os"
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
	preexisting = map[string]bool{}
	for _, l := range witness() {
		preexisting[l] = true
	}
	code := m.Run()
	if state != "" {
		removeTestPools(state)
		_ = os.RemoveAll(state)
	}
	os.Exit(code)
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
// by now: they would otherwise pile up in libvirt, run after run.
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
		if strings.HasPrefix(m[1], state+"/") || strings.HasPrefix(m[1], os.TempDir()+"/") && os.IsNotExist(err) {
			virsh("pool-destroy", pool)
			virsh("pool-undefine", pool)
		}
	}
}
