package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/guest"
	"github.com/envctl/envctl/provision/vm"
)

func newCpCmd(a *app) *cobra.Command {
	var f vmFlags
	cmd := &cobra.Command{
		Use:   "cp [ENV:]SRC [ENV:]DST",
		Short: "Copy files to or from a kept environment over SFTP, recursively",
		Long: `cp copies a file or a directory tree between this machine and a kept
environment, over SFTP with the pinned host key, as ` + "`cp -r`" + ` would: into DST
when it is an existing directory, else to DST itself. Exactly one side
names an environment, as ENV:PATH. A copy out of the guest writes at most
16 GiB.`,
		Example: `  envctl cp crio-1-34-runc-f412a7:/var/log/crio.log .
  envctl cp ./patched-crictl crio-1-34-runc-f412a7:/usr/local/bin/crictl
  envctl cp crio-1-34-runc-f412a7:/etc/crio ./crio-config`,
		Args:              cobra.ExactArgs(2),
		ValidArgsFunction: completeEnvs(a),
		RunE: func(cmd *cobra.Command, args []string) error {
			srcEnv, src := splitEnvPath(args[0])
			dstEnv, dst := splitEnvPath(args[1])
			if (srcEnv == "") == (dstEnv == "") {
				return fault.Inputf("cp %s %s: name an environment on exactly one side, as ENV:PATH (`envctl status` lists them)", args[0], args[1])
			}
			ctx, stop := a.signalContext(cmd)
			defer stop()
			m, err := vm.Attach(ctx, a.vmOptions(&f), srcEnv+dstEnv)
			if err != nil {
				return err
			}
			defer m.Release()
			var st guest.CopyStats
			if srcEnv != "" {
				st, err = m.SSH.CopyOut(ctx, src, dst, 0)
			} else {
				st, err = m.SSH.CopyIn(ctx, src, dst)
			}
			if err != nil {
				return err
			}
			return a.emit(st, func(w io.Writer) {
				fmt.Fprintf(w, "copied %d files, %d directories, %d bytes\n", st.Files, st.Dirs, st.Bytes)
			})
		},
	}
	f.register(cmd, false)
	return cmd
}

// splitEnvPath splits ENV:PATH; a path with no colon before its first
// slash (./a:b, /x:y) is local.
func splitEnvPath(s string) (envID, path string) {
	i := strings.Index(s, ":")
	if i <= 0 || strings.Contains(s[:i], "/") {
		return "", s
	}
	return s[:i], s[i+1:]
}
