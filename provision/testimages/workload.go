package testimages

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

//go:embed multicall.go
var multicallSource []byte

// WorkloadSource is multicall.go as a standalone program: the test
// containers' sleep, cat and pause, with nothing but the standard library.
func WorkloadSource() []byte {
	src := bytes.Replace(multicallSource, []byte("package testimages"), []byte("package main"), 1)
	return append(src, "\nfunc main() {\n\tif !Main() {\n\t\tos.Exit(2)\n\t}\n}\n"...)
}

// WorkloadBinary finds or makes the static binary the test images run, so
// that the test works however envctl itself was linked:
//  1. a workload built earlier from WorkloadSource, cached under dir;
//  2. else one built now with the go command (CGO_ENABLED=0), about two
//     seconds, then cached;
//  3. else envctl itself, when it is static (`make build`, releases).
//
// A dynamically linked envctl (a plain `go build` or `go install` has cgo
// on) was built with Go, so step 2 is available to it.
func WorkloadBinary(ctx context.Context, dir, self string) (string, error) {
	goVersion, goErr := exec.CommandContext(ctx, "go", "env", "GOVERSION").Output()
	if goErr == nil {
		sum := sha256.Sum256(append(WorkloadSource(), goVersion...))
		out := filepath.Join(dir, "workload", hex.EncodeToString(sum[:8]), "envctl-workload")
		if CheckStatic(out) == nil {
			return out, nil
		}
		if err := buildWorkload(ctx, out); err != nil {
			return "", err
		}
		return out, nil
	}
	if err := CheckStatic(self); err != nil {
		return "", fmt.Errorf("%w, and without the go command envctl cannot build a static test workload; build envctl with CGO_ENABLED=0 (`make build`), or put go on PATH", err)
	}
	return self, nil
}

func buildWorkload(ctx context.Context, out string) error {
	work, err := os.MkdirTemp("", "envctl-workload-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := os.WriteFile(filepath.Join(work, "main.go"), WorkloadSource(), 0o644); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(work, "go.mod"), []byte("module envctl-workload\n\ngo 1.21\n"), 0o644); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	tmp := out + ".tmp"
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags", "-s -w", "-o", tmp, ".")
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=", "GOTOOLCHAIN=local")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build the test workload: %v: %s", err, strings.TrimSpace(string(b)))
	}
	if err := CheckStatic(tmp); err != nil {
		return err
	}
	return os.Rename(tmp, out)
}
