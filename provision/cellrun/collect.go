package cellrun

import (
	"context"
	"os"
	"path/filepath"
	"time"

	"github.com/envctl/envctl/provision/crio"
	"github.com/envctl/envctl/provision/vm"
)

// collect keeps what explains a failure: CRI-O's journal, crictl's view,
// the CRI-O configuration, the test's own files and the serial console.
func (r *run) collect(ctx context.Context) {
	if r.machine == nil {
		return
	}
	dir := r.opts.ResultsDir
	if dir == "" {
		dir = filepath.Join(r.opts.VM.Store.ResultsDir(), r.started.Env+"-"+time.Now().UTC().Format("20060102T150405"))
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		r.log().Warn("results directory", "dir", dir, "err", err)
		return
	}
	r.results = dir
	files := r.artifacts()
	if files == nil {
		files = map[string]string{}
	}
	if g := r.machine.SSH; g != nil {
		cctx, cancel := vm.TeardownContext(ctx, 30*time.Second)
		defer cancel()
		for name, cmd := range map[string]string{
			"crio-journal.log": "journalctl -u crio --no-pager -o short-precise",
			"crictl-ps.txt":    "crictl ps -a; crictl pods; crictl images",
			"crio-config.txt":  "cat " + crio.ConfigPath,
		} {
			if out, err := g.Output(cctx, cmd); err == nil || out != "" {
				files[name] = out
			}
		}
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			r.log().Warn("results", "file", name, "err", err)
		}
	}
	if err := r.machine.SaveConsole(ctx, filepath.Join(dir, "console.log")); err != nil {
		r.log().Debug("results: console", "err", err)
	}
}
