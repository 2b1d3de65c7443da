package bisect

import (
	"context"
	"math/bits"
)

// Outcome is what one probe found, mapped as `git bisect run` does.
type Outcome string

// The outcomes.
const (
	Good  Outcome = "good" // the test passed
	Bad   Outcome = "bad"  // the test failed
	Skip  Outcome = "skip" // could not test: the search goes around it
	Abort Outcome = "abort"
)

// Prober probes one step of the path.
type Prober func(ctx context.Context, i int) Outcome

// Search is a bisection's answer.
type Search struct {
	// Found is set when FirstBad is known: path[FirstBad] is bad and
	// path[LastGood] = path[FirstBad-1] is good.
	Found    bool `json:"found"`
	FirstBad int  `json:"first_bad"`
	LastGood int  `json:"last_good"`
	// Candidates hold the first bad step when skips hid it.
	Candidates []int `json:"candidates,omitempty"`
	// Probes is every index probed, in order, with its outcome.
	Probes []Probed `json:"probes"`
	Reason string   `json:"reason,omitempty"`
	// Swapped is set when --good fails and --bad passes.
	Swapped bool `json:"swapped,omitempty"`
	// EndsWrong is set when an end is not what it was said to be.
	EndsWrong bool `json:"ends_wrong,omitempty"`
}

// Probed is one probe's index and outcome.
type Probed struct {
	Index   int     `json:"index"`
	Outcome Outcome `json:"outcome"`
}

// MaxProbes is the promised bound for a path of n specs without skips:
// ⌈log2(n-1)⌉ inner probes, plus the two ends unless trusted.
func MaxProbes(n int, trustEndpoints bool) int {
	steps := n - 1
	inner := 0
	if steps > 1 {
		inner = bits.Len(uint(steps - 1))
	}
	if !trustEndpoints {
		inner += 2
	}
	return inner
}

// Bisect binary-searches path indices 0..n-1 for the first bad one; index
// 0 is good and n-1 bad, probed first unless trustEndpoints.
func Bisect(ctx context.Context, n int, probe Prober, trustEndpoints bool) Search {
	s := Search{FirstBad: -1, LastGood: -1}
	try := func(i int) Outcome {
		o := probe(ctx, i)
		s.Probes = append(s.Probes, Probed{i, o})
		return o
	}
	lo, hi := 0, n-1
	if !trustEndpoints {
		first := try(0)
		if first == Abort {
			s.Reason = "aborted"
			return s
		}
		last := try(n - 1)
		switch {
		case last == Abort:
			s.Reason = "aborted"
			return s
		case first == Bad && last == Good:
			s.Swapped, s.EndsWrong, s.Reason = true, true, "the --good end fails and the --bad end passes: swap --good and --bad"
			return s
		case first == Bad:
			s.EndsWrong, s.Reason = true, "the --good end already fails: pick an older good"
			return s
		case last == Good:
			s.EndsWrong, s.Reason = true, "the --bad end passes: nothing to find between them"
			return s
		case first == Skip || last == Skip:
			s.Reason = "an end could not be tested; fix that, or pass --trust-endpoints"
			return s
		}
	}
	skipped := map[int]bool{}
	for hi-lo > 1 {
		i := nearest(lo, hi, skipped)
		if i < 0 {
			for k := lo + 1; k <= hi; k++ {
				s.Candidates = append(s.Candidates, k)
			}
			s.LastGood, s.Reason = lo, "probes that could not test hide the first bad step; it is one of the candidates"
			return s
		}
		switch try(i) {
		case Good:
			lo = i
		case Bad:
			hi = i
		case Skip:
			skipped[i] = true
		case Abort:
			s.Reason = "aborted"
			return s
		}
	}
	s.Found, s.FirstBad, s.LastGood = true, hi, lo
	return s
}

// nearest is the untried, unskipped index closest to the middle of
// (lo, hi), or -1.
func nearest(lo, hi int, skipped map[int]bool) int {
	mid := (lo + hi) / 2
	for d := 0; d < hi-lo; d++ {
		for _, i := range []int{mid - d, mid + d} {
			if i > lo && i < hi && !skipped[i] {
				return i
			}
		}
	}
	return -1
}
