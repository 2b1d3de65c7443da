package atomicfile

import (
	"io"
	"os"
	"path/filepath"
)

// Write writes data to path with the given mode, atomically: through a
// temporary file next to it, synced before the rename. On error the
// target is as it was and no temporary file is left.
func Write(path string, data []byte, mode os.FileMode) error {
	return WriteFrom(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteFrom is Write for content that fill streams: it writes into the
// temporary file (created new, with a random name, so that nothing at a
// guessable name such as a symlink is followed), and the target appears
// only when fill succeeds.
func WriteFrom(path string, mode os.FileMode, fill func(w io.Writer) error) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	if err := fill(f); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Chmod(mode); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(f.Name(), path)
}
