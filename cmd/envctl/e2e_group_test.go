//go:build e2e

package main

import (
	"os"
	"runtime"
	"sync"
	"testing"
	"time"
)

// groupSeconds is how long each test of the parallel group took in the
// cold .ci/run of 2026-12-07 (beside another one); TestE2ECIRecipe's is
// estimated from a run alone (427 s) since its first cell job builds runc
// only. The group starts the
// longest first (LPT), so the one that runs for 20 minutes never starts
// last: go test resumes parallel tests in no set order, and a late start
// of TestE2ECIRecipe made the group about 10 minutes longer. A test not
// listed starts after the listed ones.
var groupSeconds = map[string]int{
	"TestE2ECIRecipe":                  520,
	"TestE2EUnprivilegedUser":          569,
	"TestE2EImageMovedSinceTheLock":    460,
	"TestE2EKilledRestoredRunIsReaped": 358,
	"TestE2EImageOnASecondDay":         282,
	"TestE2EImageBuildIsReproducible":  264,
	"TestE2ELockIsTheSameOnAColdCache": 171,
}

// groupSettle is how long the gate waits after the first test of the
// group arrives before it starts any: go test releases them all at once
// when the serial tests are done.
const groupSettle = time.Second

// gate runs at most slots tests of the group at once, the longest
// waiting one first.
type gate struct {
	mu      sync.Mutex
	slots   int
	waiting map[string]chan struct{}
	settled bool
	first   sync.Once
}

var group = &gate{slots: runtime.GOMAXPROCS(0), waiting: map[string]chan struct{}{}}

// parallelGroup marks a test that may run beside others of the group
// (GOMAXPROCS of them at once: 2 here; `make e2e` raises go test's
// -parallel so that this gate, not go test, picks which), after every
// other test is done: a test that builds an image (one core, mostly I/O),
// waits (a dead-man timer) or compiles, with no domain on qemu:///system
// that another test's assertClean would see, or one whose state directory
// is its own. The timing-sensitive tests all run before, one at a time.
func parallelGroup(t *testing.T) {
	if os.Getenv("ENVCTL_E2E_SERIAL") != "" {
		return
	}
	t.Parallel()
	waited := time.Now()
	t.Cleanup(group.enter(t.Name()))
	t.Logf("the parallel group starts it after %s (%d s expected)", time.Since(waited).Round(time.Second), groupSeconds[t.Name()])
}

// enter waits for the test's turn and returns what ends it.
func (g *gate) enter(name string) func() {
	ch := make(chan struct{})
	g.mu.Lock()
	g.waiting[name] = ch
	g.mu.Unlock()
	g.first.Do(func() {
		time.AfterFunc(groupSettle, func() {
			g.mu.Lock()
			g.settled = true
			g.dispatchLocked()
			g.mu.Unlock()
		})
	})
	g.mu.Lock()
	g.dispatchLocked()
	g.mu.Unlock()
	<-ch
	return func() {
		g.mu.Lock()
		g.slots++
		g.dispatchLocked()
		g.mu.Unlock()
	}
}

// dispatchLocked starts the longest waiting tests while slots are free.
func (g *gate) dispatchLocked() {
	for g.settled && g.slots > 0 && len(g.waiting) > 0 {
		next := ""
		for n := range g.waiting {
			if next == "" || groupSeconds[n] > groupSeconds[next] || (groupSeconds[n] == groupSeconds[next] && n < next) {
				next = n
			}
		}
		close(g.waiting[next])
		delete(g.waiting, next)
		g.slots--
	}
}
