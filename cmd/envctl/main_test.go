package main

import (
	"bytes"
	"os"
	"strings"
	"testing"
)

// TestExitCodes runs the CLI in-process on bad input: each case must exit
// with the documented code and a one-line error, never a panic.
func TestExitCodes(t *testing.T) {
	dir := t.TempDir()
	bad := dir + "/bad.yaml"
	os.WriteFile(bad, []byte("name: x\nvm: {memroy: 1GiB}\n"), 0o644)
	if err := os.Chdir("../.."); err != nil {
		t.Fatal(err)
	}
	defer os.Chdir("cmd/envctl")
	t.Setenv("ENVCTL_STATE_DIR", dir+"/state")
	t.Setenv("ENVCTL_CACHE_DIR", dir+"/cache")
	tests := []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"version"}, 0, ""},
		{[]string{"catalog", "cri-tools"}, 0, ""},
		{[]string{"show", "crio-1.34-runc"}, 0, ""},
		{[]string{"show", "crictl-matrix", "-o", "json"}, 0, ""},
		{[]string{"plan", "seed-crictl-1.30"}, 0, ""},
		{[]string{"frobnicate"}, 2, "unknown command"},
		{[]string{"show", "--bogus", "x"}, 2, "unknown flag"},
		{[]string{"show"}, 2, "exactly one PROFILE"},
		{[]string{"show", "crio-1.34-runx"}, 2, `did you mean "crio-1.34-runc"`},
		{[]string{"show", bad}, 2, `did you mean "memory"`},
		{[]string{"show", "crio-1.34-runc", "-o", "xml"}, 2, "--output"},
		{[]string{"catalog", "dockerd"}, 2, "unknown component"},
		{[]string{"up", bad}, 2, "memroy"},
		{[]string{"up", "crictl-matrix"}, 2, ""},
		{[]string{"down", "no-such-env"}, 2, "no environment"},
		{[]string{"image", "pull", "plan9"}, 2, "no download"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r, w, _ := os.Pipe()
			old := os.Stderr
			os.Stderr = w
			code := run(tt.args)
			w.Close()
			os.Stderr = old
			var buf bytes.Buffer
			buf.ReadFrom(r)
			if code != tt.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tt.code, buf.String())
			}
			msg := buf.String()
			if tt.err != "" && !strings.Contains(msg, tt.err) {
				t.Errorf("stderr %q lacks %q", msg, tt.err)
			}
			if strings.Contains(msg, "goroutine ") || strings.Contains(msg, "panic") {
				t.Errorf("stack trace: %s", msg)
			}
		})
	}
}
