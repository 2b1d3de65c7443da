package guest_test

import (
	"context"
	"os/exec"
	"slices"
	"testing"

	"github.com/envctl/envctl/provision/guest"
)

// shell runs a command with the system's sh, as the guest's sshd would.
type shell struct{}

func (shell) Output(ctx context.Context, cmd string) (string, error) {
	out, err := exec.CommandContext(ctx, "sh", "-c", cmd).CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return string(out), &guest.ExitError{Cmd: cmd, Status: ee.ExitCode()}
	}
	return string(out), err
}

// A batch run by a real shell gives every command its own output and exit
// status, whatever the command prints or does.
func TestBatchInARealShell(t *testing.T) {
	tests := []struct {
		cmd  string
		want guest.Result
	}{
		{"echo crio version 1.34.0", guest.Result{Output: "crio version 1.34.0\n"}},
		{"printf no-newline", guest.Result{Output: "no-newline"}},
		{"echo to stderr >&2; exit 3", guest.Result{Output: "to stderr\n", Exit: 3}},
		{"cat", guest.Result{}}, // no input: it does not hang
		{"true", guest.Result{}},
		{"printf '\\nenvctl-00 5 end 0\\n'", guest.Result{Output: "\nenvctl-00 5 end 0\n"}}, // a frame of another nonce
		{"sh -c 'exit 127'", guest.Result{Exit: 127}},
	}
	var cmds []string
	for _, tt := range tests {
		cmds = append(cmds, tt.cmd)
	}
	got, err := guest.Batch(context.Background(), shell{}, cmds)
	if err != nil {
		t.Fatal(err)
	}
	for i, tt := range tests {
		if got[i] != tt.want {
			t.Errorf("%q: %+v, want %+v", tt.cmd, got[i], tt.want)
		}
	}
}

func TestBatchScriptRoundTrip(t *testing.T) {
	cmds := []string{"crio --version", "crictl version", "sha256sum '/usr/local/bin/crio' '/usr/local/bin/crictl'"}
	script, err := guest.BatchScript("envctl-0a1b", cmds)
	if err != nil {
		t.Fatal(err)
	}
	nonce, back, ok := guest.SplitBatchScript(script)
	if !ok || nonce != "envctl-0a1b" || !slices.Equal(back, cmds) {
		t.Errorf("split: %v %q %q", ok, nonce, back)
	}
	if _, _, ok := guest.SplitBatchScript("crictl version"); ok {
		t.Error("a plain command passed for a batch")
	}
	if _, err := guest.BatchScript("envctl-0a1b", []string{"echo a\necho b"}); err == nil {
		t.Error("a command over two lines was taken")
	}
}

// Output torn off in the middle (the guest went away) is an error, not a
// short answer.
func TestParseBatchTorn(t *testing.T) {
	full := guest.FrameResult("envctl-ab", 0, guest.Result{Output: "a\n"}) + guest.FrameResult("envctl-ab", 1, guest.Result{Output: "b", Exit: 2})
	if res, err := guest.ParseBatch("envctl-ab", full, 2); err != nil || res[1] != (guest.Result{Output: "b", Exit: 2}) {
		t.Fatalf("%+v %v", res, err)
	}
	for cut := range len(full) - 1 {
		if _, err := guest.ParseBatch("envctl-ab", full[:cut], 2); err == nil {
			t.Errorf("output cut at %d parsed", cut)
		}
	}
}
