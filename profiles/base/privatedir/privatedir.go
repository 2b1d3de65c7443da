package privatedir

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// Fallback returns $TMPDIR/envctl-UID/name, made private: the per-user
// directory is created with mode 0700 and checked to be a directory (not
// a symbolic link) owned by this user and closed to others; name is made
// inside it, 0700 as well.
func Fallback(name string) (string, error) {
	root := filepath.Join(os.TempDir(), fmt.Sprintf("envctl-%d", os.Geteuid()))
	if err := os.Mkdir(root, 0o700); err != nil && !os.IsExist(err) {
		return "", fmt.Errorf("private directory %s: %w", root, err)
	}
	if err := Check(root); err != nil {
		return "", err
	}
	dir := filepath.Join(root, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("private directory %s: %w", dir, err)
	}
	return dir, Check(dir)
}

// Check refuses a directory that is a symbolic link, is not this user's,
// or that others may enter; a directory of this user's that others may
// enter is closed (0700).
func Check(dir string) error {
	fi, err := os.Lstat(dir)
	if err != nil {
		return fmt.Errorf("private directory %s: %w", dir, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	switch {
	case fi.Mode()&os.ModeSymlink != 0 || !fi.IsDir():
		return fmt.Errorf("private directory %s is not a directory (a symbolic link?): refused; remove it, or set ENVCTL_STATE_DIR and ENVCTL_CACHE_DIR", dir)
	case ok && int(st.Uid) != os.Geteuid():
		return fmt.Errorf("private directory %s belongs to user %d, not to you (%d): refused; remove it, or set ENVCTL_STATE_DIR and ENVCTL_CACHE_DIR", dir, st.Uid, os.Geteuid())
	case fi.Mode().Perm()&0o077 != 0:
		if err := os.Chmod(dir, 0o700); err != nil {
			return fmt.Errorf("private directory %s: %w", dir, err)
		}
	}
	return nil
}
