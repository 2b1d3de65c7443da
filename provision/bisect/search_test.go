package bisect

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/envctl/envctl/profiles"
)

// TestBisectFindsEveryFirstBadStep: for every path length up to 8 steps
// and every position of the first bad step, the search finds it within
// the promised number of probes, with and without trusted ends.
func TestBisectFindsEveryFirstBadStep(t *testing.T) {
	for steps := 1; steps <= 8; steps++ {
		n := steps + 1
		for k := 1; k < n; k++ {
			for _, trust := range []bool{false, true} {
				probe := func(_ context.Context, i int) Outcome {
					if i < k {
						return Good
					}
					return Bad
				}
				s := Bisect(context.Background(), n, probe, trust)
				if !s.Found || s.FirstBad != k || s.LastGood != k-1 {
					t.Errorf("steps %d, first bad %d, trust %v: %+v", steps, k, trust, s)
				}
				if len(s.Probes) > MaxProbes(n, trust) {
					t.Errorf("steps %d, first bad %d, trust %v: %d probes, promised at most %d", steps, k, trust, len(s.Probes), MaxProbes(n, trust))
				}
			}
		}
	}
}

func TestBisectSkipsAndEnds(t *testing.T) {
	outcomes := func(os ...Outcome) Prober {
		return func(_ context.Context, i int) Outcome { return os[i] }
	}
	tests := []struct {
		name     string
		probe    Prober
		n        int
		trust    bool
		found    bool
		firstBad int
		cands    []int
		swapped  bool
	}{
		{"a skip is gone around", outcomes(Good, Good, Skip, Good, Bad), 5, false, true, 4, nil, false},
		{"a skip next to the boundary", outcomes(Good, Good, Skip, Bad, Bad), 5, false, false, -1, []int{2, 3}, false},
		{"skips hide the boundary", outcomes(Good, Skip, Skip, Bad), 4, false, false, -1, []int{1, 2, 3}, false},
		{"path of one step, trusted", outcomes(Good, Bad), 2, true, true, 1, nil, false},
		{"path of one step, probed", outcomes(Good, Bad), 2, false, true, 1, nil, false},
		{"good and bad swapped", outcomes(Bad, Good, Good), 3, false, false, -1, nil, true},
		{"good end already bad", outcomes(Bad, Bad, Bad), 3, false, false, -1, nil, false},
		{"bad end passes", outcomes(Good, Good, Good), 3, false, false, -1, nil, false},
		{"an end could not test", outcomes(Skip, Good, Bad), 3, false, false, -1, nil, false},
		{"aborted", outcomes(Good, Abort, Bad, Bad), 4, true, false, -1, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := Bisect(context.Background(), tt.n, tt.probe, tt.trust)
			if s.Found != tt.found || (tt.found && s.FirstBad != tt.firstBad) || fmt.Sprint(s.Candidates) != fmt.Sprint(tt.cands) || s.Swapped != tt.swapped {
				t.Errorf("%+v", s)
			}
			if !s.Found && s.Reason == "" {
				t.Error("no reason given")
			}
		})
	}
}

func TestPath(t *testing.T) {
	cat := map[string][]string{"cri-tools": {"1.30.0", "1.34.0", "1.36.0", "1.37.0"}, "runc": {"1.3.5", "1.3.6", "1.4.0"}, "cri-o": {"1.33.0", "1.34.0"}}
	versions := func(_ profiles.Role, comp string) ([]string, error) { return cat[comp], nil }
	good, _ := ParseSpec("cri-o=1.34.0,cri-tools=1.37.0,runtime=runc@1.3.6")
	bad, _ := ParseSpec("cri-o=1.34.0,cri-tools=1.30.0,runtime=runc@1.4.0")
	p, err := Path(good, bad, nil, versions)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range p {
		got = append(got, s.String())
	}
	want := []string{
		"cri-o=1.34.0,cri-tools=1.37.0,runtime=runc@1.3.6",
		"cri-o=1.34.0,cri-tools=1.36.0,runtime=runc@1.3.6",
		"cri-o=1.34.0,cri-tools=1.34.0,runtime=runc@1.3.6",
		"cri-o=1.34.0,cri-tools=1.30.0,runtime=runc@1.3.6",
		"cri-o=1.34.0,cri-tools=1.30.0,runtime=runc@1.4.0",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("path\n%v\nwant\n%v", got, want)
	}
	// --order puts the runtime first.
	p, _ = Path(good, bad, []profiles.Role{profiles.RoleRuntime}, versions)
	if p[1].String() != "cri-o=1.34.0,cri-tools=1.37.0,runtime=runc@1.4.0" {
		t.Errorf("ordered path starts %s", p[1])
	}
	if Describe(p[0], p[1]) != "runtime runc@1.3.6 → runc@1.4.0" {
		t.Errorf("describe %q", Describe(p[0], p[1]))
	}
	// A runtime swap is one step.
	crun, _ := ParseSpec("cri-o=1.34.0,cri-tools=1.37.0,runtime=crun@1.21")
	if p, err := Path(good, crun, nil, versions); err != nil || len(p) != 2 {
		t.Errorf("runtime swap: %v %v", p, err)
	}
	for _, tt := range []struct{ good, bad, want string }{
		{"cri-tools=1.37.0", "cri-tools=1.37.0", "the same"},
		{"cri-tools=1.37.0", "cri-tools=1.31.0", "1.31.0 is not a version that can be probed"},
		{"cri-tools=1.37.0", "cri-o=1.33.0", "pin the same components"},
	} {
		g, _ := ParseSpec(tt.good)
		b, _ := ParseSpec(tt.bad)
		if _, err := Path(g, b, nil, versions); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s..%s: %v", tt.good, tt.bad, err)
		}
	}
	for _, bad := range []string{"cri-tools", "kernel=6.1", "runtime=runc"} {
		if _, err := ParseSpec(bad); err == nil {
			t.Errorf("ParseSpec(%q) accepted", bad)
		}
	}
}
