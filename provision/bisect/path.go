package bisect

import (
	"fmt"
	"slices"
	"strings"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/catalog"
)

// Spec pins a version for some roles, written as a cell name:
// "cri-o=1.34.0,cri-tools=1.37.0,runtime=runc@1.3.6".
type Spec map[profiles.Role]string

// ParseSpec reads a spec.
func ParseSpec(s string) (Spec, error) {
	out := Spec{}
	for _, part := range strings.Split(strings.TrimSpace(s), ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || v == "" {
			return nil, fault.Inputf("spec %q: write component=version pairs, like cri-o=1.34.0,cri-tools=1.37.0,runtime=runc@1.3.6", s)
		}
		role, err := profiles.ParseRole(k)
		if err != nil {
			return nil, fault.Inputf("spec %q: %v", s, err)
		}
		if role == profiles.RoleRuntime && !strings.Contains(v, "@") {
			return nil, fault.Inputf("spec %q: the runtime is NAME@VERSION, like runc@1.3.6", s)
		}
		out[role] = v
	}
	return out, nil
}

func (s Spec) String() string { return profiles.CellName(s) }

// component is the catalog name and version a role's value stands for.
func component(role profiles.Role, value string) (name, version string) {
	if role == profiles.RoleRuntime {
		name, version, _ = strings.Cut(value, "@")
		return name, version
	}
	return string(role), value
}

// Versions lists the versions of a component that can be probed, in
// ascending order (the catalog's, filtered to what the source serves).
type Versions func(role profiles.Role, component string) ([]string, error)

// Path builds the ordered path from good to bad: each step moves one
// component to its next version toward bad, axis by axis in order (the
// roles that differ, in role order unless order says otherwise). The
// first element is good, the last bad.
func Path(good, bad Spec, order []profiles.Role, versions Versions) ([]Spec, error) {
	var axes []profiles.Role
	for _, r := range order {
		if good[r] != bad[r] {
			axes = append(axes, r)
		}
	}
	for _, r := range profiles.Roles {
		if good[r] != bad[r] && !slices.Contains(axes, r) {
			axes = append(axes, r)
		}
	}
	for r := range good {
		if _, ok := bad[r]; !ok {
			return nil, fault.Inputf("--bad does not pin %s, which --good pins; pin the same components in both", r)
		}
	}
	for r := range bad {
		if _, ok := good[r]; !ok {
			return nil, fault.Inputf("--good does not pin %s, which --bad pins; pin the same components in both", r)
		}
	}
	if len(axes) == 0 {
		return nil, fault.Inputf("--good and --bad are the same (%s): nothing to bisect", good)
	}
	path := []Spec{clone(good)}
	cur := clone(good)
	for _, r := range axes {
		gName, gVer := component(r, good[r])
		bName, bVer := component(r, bad[r])
		if gName != bName {
			// runc → crun: one step.
			cur[r] = bad[r]
			path = append(path, clone(cur))
			continue
		}
		vs, err := versions(r, gName)
		if err != nil {
			return nil, err
		}
		i, j := indexOf(vs, gVer), indexOf(vs, bVer)
		for _, missing := range []struct {
			v   string
			idx int
		}{{gVer, i}, {bVer, j}} {
			if missing.idx < 0 {
				return nil, fault.Inputf("%s %s is not a version that can be probed; available: %s", gName, missing.v, strings.Join(vs, ", "))
			}
		}
		step := 1
		if j < i {
			step = -1
		}
		for k := i + step; ; k += step {
			if r == profiles.RoleRuntime {
				cur[r] = gName + "@" + vs[k]
			} else {
				cur[r] = vs[k]
			}
			path = append(path, clone(cur))
			if k == j {
				break
			}
		}
	}
	return path, nil
}

func indexOf(vs []string, v string) int {
	return slices.IndexFunc(vs, func(x string) bool { return catalog.SameVersion(x, v) })
}

func clone(s Spec) Spec {
	out := Spec{}
	for k, v := range s {
		out[k] = v
	}
	return out
}

// Describe names a spec's change from the previous one: "cri-tools 1.34.0 → 1.30.0".
func Describe(prev, next Spec) string {
	var parts []string
	for _, r := range profiles.Roles {
		if prev[r] != next[r] {
			parts = append(parts, fmt.Sprintf("%s %s → %s", r, prev[r], next[r]))
		}
	}
	return strings.Join(parts, ", ")
}
