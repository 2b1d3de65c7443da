package fault

import (
	"errors"
	"fmt"
	"testing"
)

type typed struct{}

func (typed) Error() string     { return "typed" }
func (typed) FaultClass() Class { return Input }

func TestClassOf(t *testing.T) {
	infra := Infraf("libvirt: %w", errors.New("EOF"))
	tests := []struct {
		name string
		err  error
		want Class
	}{
		{"nil", nil, Unclassified},
		{"plain", errors.New("x"), Unclassified},
		{"input", Inputf("bad"), Input},
		{"wrapped keeps the class", fmt.Errorf("up: %w", infra), Infra},
		{"innermost wins over a wrapper's class", Inputf("profile: %w", infra), Infra},
		{"AsInput does not override", AsInput(infra), Infra},
		{"AsInput classifies the unclassified", AsInput(errors.New("x")), Input},
		{"typed error declares its class", fmt.Errorf("load: %w", typed{}), Input},
		{"joined: first classified branch", errors.Join(errors.New("plain"), infra, Inputf("later")), Infra},
		{"EINVAL text is not usage", fmt.Errorf("write: invalid argument"), Unclassified},
	}
	for _, tt := range tests {
		if got := ClassOf(tt.err); got != tt.want {
			t.Errorf("%s: ClassOf = %v, want %v", tt.name, got, tt.want)
		}
	}
	if !Is(infra, Infra) || Is(nil, Infra) {
		t.Error("Is")
	}
	if AsInfra(nil) != nil || AsInput(nil) != nil {
		t.Error("nil must stay nil")
	}
}

func TestClassText(t *testing.T) {
	for _, c := range []Class{Unclassified, TestFailed, Input, Infra} {
		b, _ := c.MarshalText()
		var back Class
		if err := back.UnmarshalText(b); err != nil || back != c {
			t.Errorf("%v round trip: %v %v", c, back, err)
		}
	}
	var c Class
	if c.UnmarshalText([]byte("bogus")) == nil {
		t.Error("accepted an unknown class")
	}
}
