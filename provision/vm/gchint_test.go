package vm

import "testing"

func TestGCHintNamesTheHost(t *testing.T) {
	const local, remote = "qemu:///system", "qemu+ssh://root@h/system"
	for _, tc := range []struct {
		host    string
		reached bool
		want    string
	}{
		{local, true, "`envctl gc`"},
		{remote, true, "`envctl gc --connect '" + remote + "'`"},
		{remote, false, "`envctl gc --connect '" + remote + "'` (once the host answers)"},
	} {
		if got := gcHint(tc.host, local, tc.reached); got != tc.want {
			t.Errorf("gcHint(%s, %v) = %s, want %s", tc.host, tc.reached, got, tc.want)
		}
	}
}
