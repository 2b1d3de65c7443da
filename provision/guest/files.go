package guest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"github.com/pkg/sftp"
)

// Upload is one file to copy into the guest, with the sha256 (hex) it was
// verified to have when it entered the host's cache.
type Upload struct {
	Local, Remote string
	SHA256        string
}

// ChangedError is a host file whose bytes, as they were streamed to the
// guest, were not the ones recorded for it: it changed after it was
// verified. Nothing of it is left in the guest.
type ChangedError struct {
	Path             string
	Recorded, Actual string
}

func (e *ChangedError) Error() string {
	return fmt.Sprintf("%s changed after it was verified (recorded sha256 %s, streamed %s); it was not installed: run again to fetch or build it anew, and `envctl cache verify` to check the rest", e.Path, e.Recorded, e.Actual)
}

// Upload copies files to the guest over SFTP, each through a temporary
// name that is renamed into place only when the bytes sent hash to the
// recorded digest (when one is given).
func (c *Client) Upload(ctx context.Context, files []Upload, mode os.FileMode) error {
	sc, err := sftp.NewClient(c.ssh, sftp.MaxConcurrentRequestsPerFile(64))
	if err != nil {
		return fmt.Errorf("sftp %s: %w", c.Addr, err)
	}
	defer sc.Close()
	// SFTP calls do not take a context: closing the client ends them.
	stop := context.AfterFunc(ctx, func() { _ = sc.Close() })
	defer stop()
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := uploadOne(ctx, sc, f, mode); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			var changed *ChangedError
			if errors.As(err, &changed) {
				return err
			}
			return fmt.Errorf("upload %s to %s:%s: %w", f.Local, c.Addr, f.Remote, err)
		}
	}
	return nil
}

// ctxReader stops a copy when its context ends.
type ctxReader struct {
	ctx  context.Context
	r    io.Reader
	size int64
}

// Size lets SFTP plan concurrent writes as it would for the file itself.
func (r ctxReader) Size() int64 { return r.size }

func (r ctxReader) Read(p []byte) (int, error) {
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	return r.r.Read(p)
}

func uploadOne(ctx context.Context, sc *sftp.Client, f Upload, mode os.FileMode) error {
	in, err := os.Open(f.Local)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := sc.MkdirAll(path.Dir(f.Remote)); err != nil {
		return err
	}
	tmp := f.Remote + ".envctl-upload"
	out, err := sc.Create(tmp)
	if err != nil {
		return err
	}
	var size int64 = -1
	if st, err := in.Stat(); err == nil {
		size = st.Size()
	}
	h := sha256.New()
	n, err := out.ReadFrom(ctxReader{ctx, io.TeeReader(in, h), size})
	if err == nil && size >= 0 && n != size {
		err = fmt.Errorf("short upload: wrote %d of %d bytes", n, size)
	}
	if err == nil {
		err = out.Chmod(mode)
	}
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if got := hex.EncodeToString(h.Sum(nil)); err == nil && f.SHA256 != "" && got != f.SHA256 {
		err = &ChangedError{Path: f.Local, Recorded: f.SHA256, Actual: got}
	}
	if err != nil {
		_ = sc.Remove(tmp)
		return err
	}
	return sc.PosixRename(tmp, f.Remote)
}

// UploadVerified uploads files and then checks each one's sha256 in the
// guest against its recorded digest, retrying a mismatching file once.
// Every file must have a recorded digest.
func (c *Client) UploadVerified(ctx context.Context, files []Upload, mode os.FileMode) error {
	for _, f := range files {
		if f.SHA256 == "" {
			return fmt.Errorf("upload %s: no recorded digest to verify it against", f.Local)
		}
	}
	pending := files
	for attempt := 1; ; attempt++ {
		if err := c.Upload(ctx, pending, mode); err != nil {
			return err
		}
		bad, err := c.mismatched(ctx, pending)
		if err != nil {
			return err
		}
		if len(bad) == 0 {
			return nil
		}
		if attempt == 2 {
			var names []string
			for _, f := range bad {
				names = append(names, f.Local+" → "+f.Remote)
			}
			return fmt.Errorf("upload to %s: sha256 differs after upload for %s", c.Addr, strings.Join(names, ", "))
		}
		pending = bad
	}
}

// SHA256 hashes files in the guest: path → hex digest ("" when missing).
func (c *Client) SHA256(ctx context.Context, paths ...string) (map[string]string, error) {
	quoted := make([]string, len(paths))
	for i, p := range paths {
		quoted[i] = Quote(p)
	}
	// sha256sum exits 1 when a file is missing: the others still count.
	out, err := c.Output(ctx, "sha256sum "+strings.Join(quoted, " "))
	var exit *ExitError
	if err != nil && !errors.As(err, &exit) {
		return nil, fmt.Errorf("sha256sum on %s: %w: %s", c.Addr, err, out)
	}
	got := map[string]string{}
	for _, p := range paths {
		got[p] = ""
	}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) == 2 {
			got[f[1]] = f[0]
		}
	}
	return got, nil
}

func (c *Client) mismatched(ctx context.Context, files []Upload) ([]Upload, error) {
	var remotes []string
	for _, f := range files {
		remotes = append(remotes, f.Remote)
	}
	got, err := c.SHA256(ctx, remotes...)
	if err != nil {
		return nil, fmt.Errorf("verify upload: %w", err)
	}
	var bad []Upload
	for _, f := range files {
		if got[f.Remote] != f.SHA256 {
			bad = append(bad, f)
		}
	}
	return bad, nil
}

// File is a file to write into the guest.
type File struct {
	Path string
	Data []byte
}

// WriteFile writes data to a path in the guest.
func (c *Client) WriteFile(ctx context.Context, remote string, data []byte, mode os.FileMode) error {
	return c.WriteFiles(ctx, []File{{Path: remote, Data: data}}, mode)
}

// WriteFiles writes files into the guest in one SFTP session (each new
// session starts a process in the guest, which software emulation makes
// slow), making their directories.
func (c *Client) WriteFiles(ctx context.Context, files []File, mode os.FileMode) error {
	sc, err := sftp.NewClient(c.ssh)
	if err != nil {
		return fmt.Errorf("sftp %s: %w", c.Addr, err)
	}
	defer sc.Close()
	// SFTP calls do not take a context: closing the client ends them.
	stop := context.AfterFunc(ctx, func() { _ = sc.Close() })
	defer stop()
	made := map[string]bool{}
	for _, f := range files {
		if err := ctx.Err(); err != nil {
			return err
		}
		if dir := path.Dir(f.Path); !made[dir] {
			if err := sc.MkdirAll(dir); err != nil {
				return fmt.Errorf("write %s:%s: %w", c.Addr, f.Path, err)
			}
			made[dir] = true
		}
		w, err := sc.Create(f.Path)
		if err != nil {
			return fmt.Errorf("write %s:%s: %w", c.Addr, f.Path, err)
		}
		if _, err := w.Write(f.Data); err != nil {
			w.Close()
			return fmt.Errorf("write %s:%s: %w", c.Addr, f.Path, err)
		}
		if err := w.Chmod(mode); err != nil {
			w.Close()
			return fmt.Errorf("write %s:%s: %w", c.Addr, f.Path, err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("write %s:%s: %w", c.Addr, f.Path, err)
		}
	}
	return nil
}
