package guesttest

import (
	"io"
	"io/fs"
	"os"
	"path"
	"strings"
	"time"

	"github.com/pkg/sftp"
)

// rootHandlers serve SFTP from an os.Root: absolute guest paths map into
// the root, and nothing can reach outside it.
func rootHandlers(root *os.Root) sftp.Handlers {
	h := rootFS{root}
	return sftp.Handlers{FileGet: h, FilePut: h, FileCmd: h, FileList: h}
}

type rootFS struct{ root *os.Root }

func rel(p string) string {
	p = strings.TrimPrefix(path.Clean("/"+p), "/")
	if p == "" {
		return "."
	}
	return p
}

func (h rootFS) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	return h.root.Open(rel(r.Filepath))
}

func (h rootFS) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	flags := os.O_WRONLY | os.O_CREATE
	if r.Pflags().Trunc {
		flags |= os.O_TRUNC
	}
	return h.root.OpenFile(rel(r.Filepath), flags, 0o644)
}

func (h rootFS) Filecmd(r *sftp.Request) error {
	p := rel(r.Filepath)
	switch r.Method {
	case "Setstat":
		if r.AttrFlags().Permissions {
			return h.root.Chmod(p, r.Attributes().FileMode().Perm())
		}
		return nil
	case "Mkdir":
		return h.root.Mkdir(p, 0o755)
	case "Rmdir", "Remove":
		return h.root.Remove(p)
	case "Rename", "PosixRename":
		return h.root.Rename(p, rel(r.Target))
	case "Symlink":
		return h.root.Symlink(r.Filepath, rel(r.Target))
	}
	return sftp.ErrSSHFxOpUnsupported
}

func (h rootFS) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	p := rel(r.Filepath)
	switch r.Method {
	case "List":
		d, err := h.root.Open(p)
		if err != nil {
			return nil, err
		}
		defer d.Close()
		entries, err := d.ReadDir(-1)
		if err != nil {
			return nil, err
		}
		var infos []fs.FileInfo
		for _, e := range entries {
			if fi, err := e.Info(); err == nil {
				infos = append(infos, fi)
			}
		}
		return lister(infos), nil
	case "Stat":
		fi, err := h.root.Stat(p)
		if err != nil {
			return nil, err
		}
		return lister{fi}, nil
	case "Lstat":
		fi, err := h.root.Lstat(p)
		if err != nil {
			return nil, err
		}
		return lister{fi}, nil
	case "Readlink":
		target, err := h.root.Readlink(p)
		if err != nil {
			return nil, err
		}
		return lister{linkTarget(target)}, nil
	}
	return nil, sftp.ErrSSHFxOpUnsupported
}

type lister []fs.FileInfo

func (l lister) ListAt(out []fs.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(out, l[off:])
	if n < len(out) {
		return n, io.EOF
	}
	return n, nil
}

// linkTarget is what Readlink answers: a file info named as the target.
type linkTarget string

func (l linkTarget) Name() string       { return string(l) }
func (l linkTarget) Size() int64        { return 0 }
func (l linkTarget) Mode() fs.FileMode  { return fs.ModeSymlink | 0o777 }
func (l linkTarget) ModTime() time.Time { return time.Time{} }
func (l linkTarget) IsDir() bool        { return false }
func (l linkTarget) Sys() any           { return nil }
