package guest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"

	"github.com/pkg/sftp"

	"github.com/envctl/envctl/profiles/base/fault"
)

// MaxCopyBytes bounds what one copy out of a guest writes on the host: a
// guest is outside, and a runaway file must not fill the host's disk.
const MaxCopyBytes int64 = 16 << 30

// CopyStats is what a copy moved.
type CopyStats struct {
	Files int   `json:"files"`
	Dirs  int   `json:"dirs"`
	Bytes int64 `json:"bytes"`
}

// CopyOut copies remote (a file or, recursively, a directory) from the
// guest to local over SFTP, as `cp -r` would: into local when it is an
// existing directory, else to local itself. Symbolic links are copied as
// links; at most limit bytes are written (MaxCopyBytes when 0).
func (c *Client) CopyOut(ctx context.Context, remote, local string, limit int64) (CopyStats, error) {
	var st CopyStats
	sc, stop, err := c.sftp(ctx)
	if err != nil {
		return st, err
	}
	defer stop()
	fi, err := sc.Lstat(remote)
	if err != nil {
		return st, fault.Inputf("%s:%s: %v", c.Addr, remote, err)
	}
	if li, err := os.Stat(local); err == nil && li.IsDir() {
		local = filepath.Join(local, path.Base(remote))
	}
	budget := limit
	if budget <= 0 {
		budget = MaxCopyBytes
	}
	var walk func(remote, local string, fi fs.FileInfo) error
	walk = func(remote, local string, fi fs.FileInfo) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		switch {
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := sc.ReadLink(remote)
			if err != nil {
				return err
			}
			st.Files++
			return os.Symlink(target, local)
		case fi.IsDir():
			if err := os.MkdirAll(local, fi.Mode().Perm()|0o700); err != nil {
				return err
			}
			st.Dirs++
			ents, err := sc.ReadDir(remote)
			if err != nil {
				return err
			}
			for _, e := range ents {
				if err := walk(path.Join(remote, e.Name()), filepath.Join(local, e.Name()), e); err != nil {
					return err
				}
			}
			return nil
		case !fi.Mode().IsRegular():
			return nil // devices, sockets and pipes are not copied
		}
		src, err := sc.Open(remote)
		if err != nil {
			return err
		}
		defer src.Close()
		dst, err := os.OpenFile(local, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, fi.Mode().Perm()|0o600)
		if err != nil {
			return err
		}
		n, err := io.Copy(dst, io.LimitReader(src, budget+1))
		st.Bytes += n
		st.Files++
		budget -= n
		if cerr := dst.Close(); err == nil {
			err = cerr
		}
		if err == nil && budget < 0 {
			err = fault.Inputf("%s:%s: the copy passed %d bytes; copy less at once", c.Addr, remote, limit)
		}
		return err
	}
	if err := walk(remote, local, fi); err != nil {
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
		return st, copyErr(err, "copy %s:%s to %s", c.Addr, remote, local)
	}
	return st, nil
}

// CopyIn copies local (a file or, recursively, a directory) into the guest
// at remote over SFTP, as `cp -r` would.
func (c *Client) CopyIn(ctx context.Context, local, remote string) (CopyStats, error) {
	var st CopyStats
	fi, err := os.Lstat(local)
	if err != nil {
		return st, fault.Inputf("copy %s: %v", local, err)
	}
	sc, stop, err := c.sftp(ctx)
	if err != nil {
		return st, err
	}
	defer stop()
	if ri, err := sc.Stat(remote); err == nil && ri.IsDir() {
		remote = path.Join(remote, filepath.Base(local))
	}
	err = filepath.WalkDir(local, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		rel, _ := filepath.Rel(local, p)
		dst := remote
		if rel != "." {
			dst = path.Join(remote, filepath.ToSlash(rel))
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			st.Files++
			return sc.Symlink(target, dst)
		case d.IsDir():
			st.Dirs++
			if err := sc.MkdirAll(dst); err != nil {
				return err
			}
			return sc.Chmod(dst, info.Mode().Perm())
		case !info.Mode().IsRegular():
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		out, err := sc.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC)
		if err != nil {
			return err
		}
		n, err := out.ReadFrom(ctxReader{ctx: ctx, r: src, size: info.Size()})
		st.Bytes += n
		st.Files++
		if cerr := out.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = sc.Chmod(dst, info.Mode().Perm())
		}
		return err
	})
	if err != nil {
		if ctx.Err() != nil {
			return st, ctx.Err()
		}
		return st, copyErr(err, "copy %s to %s:%s", local, c.Addr, remote)
	}
	_ = fi
	return st, nil
}

// sftp opens an SFTP session that the context's end closes.
func (c *Client) sftp(ctx context.Context) (*sftp.Client, func(), error) {
	sc, err := sftp.NewClient(c.ssh, sftp.MaxConcurrentRequestsPerFile(64))
	if err != nil {
		return nil, nil, fmt.Errorf("sftp %s: %w", c.Addr, err)
	}
	stopCtx := context.AfterFunc(ctx, func() { _ = sc.Close() })
	return sc, func() { stopCtx(); _ = sc.Close() }, nil
}

// copyErr wraps a copy's error, keeping a class set where it was made.
func copyErr(err error, format string, args ...any) error {
	var classed fault.Classed
	if errors.As(err, &classed) {
		return err
	}
	return fmt.Errorf(format+": %w", append(args, err)...)
}
