package artifacts

import (
	"archive/tar"
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/lock"
)

// The guest file names of the tools' files.
const (
	BatsDeb = "bats.deb"
	Copyimg = "copyimg"
)

// FetchTool returns a locked tool's files on the host, each with its
// digest: the bats package (downloaded and checked against the lock's
// sha256) or CRI-O's test tree and copyimg (built from the module the
// lock pins by go.sum hash, cached like any gomod build).
func (f *Fetcher) FetchTool(ctx context.Context, t lock.Artifact) (Files, error) {
	switch t.Component {
	case lock.ToolBats:
		p, err := f.blob(ctx, t)
		if err != nil {
			return Files{}, err
		}
		return Files{Binaries: map[string]string{BatsDeb: p}, Digests: map[string]string{p: t.SHA256}}, nil
	case lock.ToolCRIOTests:
		fl, err := f.gomod(ctx, t)
		if err != nil {
			return Files{}, err
		}
		for _, name := range []string{Copyimg, CRIOTestTar} {
			if _, ok := fl.Binaries[name]; !ok {
				return Files{}, fault.Infraf("CRI-O test tree %s: the build made no %s", t.Version, name)
			}
		}
		return fl, nil
	}
	return Files{}, fault.Inputf("lock: unknown tool %q; run `envctl lock`", t.Component)
}

// ReadTarFile returns one file of an uncompressed tar (name as in the tar,
// without a leading "./").
func ReadTarFile(tarPath, name string) ([]byte, error) {
	var data []byte
	found := false
	err := walkTar(tarPath, func(n string, r io.Reader) (bool, error) {
		if n != name {
			return false, nil
		}
		found = true
		var err error
		data, err = io.ReadAll(io.LimitReader(r, 16<<20))
		return true, err
	})
	if err == nil && !found {
		err = fmt.Errorf("%s has no %s", tarPath, name)
	}
	return data, err
}

// TarNames lists the names in a tar that end in ext, in the tar's order.
func TarNames(tarPath, ext string) ([]string, error) {
	var names []string
	err := walkTar(tarPath, func(n string, _ io.Reader) (bool, error) {
		if strings.HasSuffix(n, ext) {
			names = append(names, n)
		}
		return false, nil
	})
	return names, err
}

// walkTar calls fn with each entry's name (without "./") and contents
// until fn says stop.
func walkTar(tarPath string, fn func(name string, r io.Reader) (stop bool, err error)) error {
	f, err := os.Open(tarPath)
	if err != nil {
		return err
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("%s: %w", tarPath, err)
		}
		if stop, err := fn(strings.TrimPrefix(h.Name, "./"), tr); stop || err != nil {
			return err
		}
	}
}
