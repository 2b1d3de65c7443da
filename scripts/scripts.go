package scripts

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

//go:embed *.sh guest
var files embed.FS

// RecipeHash is a digest of what goes into an image: the build script,
// the guest files and the recipe's arguments (suite, extra packages). An
// image built from other ones is stale.
func RecipeHash(args ...string) string {
	h := sha256.New()
	for _, a := range args {
		fmt.Fprintf(h, "arg %s\n", a)
	}
	_ = fs.WalkDir(files, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		if path != "build-debian-image.sh" && !strings.HasPrefix(path, "guest/") {
			return nil
		}
		b, _ := files.ReadFile(path)
		fmt.Fprintf(h, "%s %d\n", path, len(b))
		h.Write(b)
		return nil
	})
	return hex.EncodeToString(h.Sum(nil))
}

// Extract writes the embedded scripts into dir (created if needed) and
// returns the path of the named script.
func Extract(dir, name string) (string, error) {
	if _, err := fs.Stat(files, name); err != nil {
		return "", fmt.Errorf("no script %q is built into envctl", name)
	}
	err := fs.WalkDir(files, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(dir, path)
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		b, err := files.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(dst, b, 0o755)
	})
	if err != nil {
		return "", fmt.Errorf("extract scripts to %s: %w", dir, err)
	}
	return filepath.Join(dir, name), nil
}
