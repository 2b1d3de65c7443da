package guest_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/envctl/envctl/provision/guest/guesttest"
)

// cp both ways over SFTP, recursively, as `cp -r` does; a copy out of the
// guest is bounded.
func TestCopyInAndOut(t *testing.T) {
	srv, c := guesttest.Connect(t)
	ctx := context.Background()
	src := filepath.Join(t.TempDir(), "tree")
	_ = os.MkdirAll(filepath.Join(src, "sub", "deeper"), 0o755)
	_ = os.WriteFile(filepath.Join(src, "a.txt"), []byte("alpha"), 0o644)
	_ = os.WriteFile(filepath.Join(src, "sub", "deeper", "run.sh"), []byte("#!/bin/sh\necho hi\n"), 0o755)
	if err := os.Symlink("a.txt", filepath.Join(src, "link")); err != nil {
		t.Fatal(err)
	}
	_ = srv.WriteFile("/root/.keep", nil)

	st, err := c.CopyIn(ctx, src, "/root")
	if err != nil {
		t.Fatalf("copy in: %v", err)
	}
	if st.Files != 3 || st.Dirs != 3 {
		t.Errorf("copy in: %+v", st)
	}
	if b, err := srv.ReadFile("/root/tree/sub/deeper/run.sh"); err != nil || !strings.Contains(string(b), "echo hi") {
		t.Errorf("copied file: %q %v", b, err)
	}
	if fi, err := os.Stat(srv.Path("/root/tree/sub/deeper/run.sh")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("mode not kept: %v", fi.Mode())
	}

	out := t.TempDir()
	st, err = c.CopyOut(ctx, "/root/tree", out, 0)
	if err != nil {
		t.Fatalf("copy out: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(out, "tree", "a.txt")); err != nil || string(b) != "alpha" || st.Bytes == 0 {
		t.Errorf("copied back: %q %v %+v", b, err, st)
	}
	// A single file to a new name.
	if _, err := c.CopyOut(ctx, "/root/tree/a.txt", filepath.Join(out, "renamed.txt"), 0); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "renamed.txt")); string(b) != "alpha" {
		t.Errorf("renamed copy: %q", b)
	}
	// The bound: a copy that passes it is refused, naming the file.
	if _, err := c.CopyOut(ctx, "/root/tree/sub/deeper/run.sh", filepath.Join(out, "big"), 4); err == nil || !strings.Contains(err.Error(), "run.sh") {
		t.Errorf("copy past the bound: %v", err)
	}
	if _, err := c.CopyOut(ctx, "/root/nope", out, 0); err == nil || !strings.Contains(err.Error(), "/root/nope") {
		t.Errorf("missing remote: %v", err)
	}
}
