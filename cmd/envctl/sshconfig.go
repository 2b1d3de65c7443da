package main

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/env"
	"github.com/envctl/envctl/provision/vm"
)

func newSSHConfigCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "ssh-config ENV",
		Short: "Print an OpenSSH config block for a kept environment (ssh, scp, rsync, editors)",
		Long: `ssh-config prints a Host block for OpenSSH: the host alias envctl-ENV, the
forwarded port, the user, the environment's key and a known_hosts file
that holds the guest's pinned host key (written next to the key), with
strict host key checking. Append it to ~/.ssh/config, or pass it with -F.`,
		Example: `  envctl ssh-config crio-1-34-runc-f412a7 >> ~/.ssh/config
  ssh envctl-crio-1-34-runc-f412a7
  envctl ssh-config ENV > env.sshconfig && rsync -e 'ssh -F env.sshconfig' -a envctl-ENV:/var/log/ logs/`,
		Args:              cobra.ExactArgs(1),
		ValidArgsFunction: completeEnvs(a),
		RunE: func(cmd *cobra.Command, args []string) error {
			e, err := a.store().Load(args[0])
			if err != nil {
				return err
			}
			block, err := sshConfigBlock(e)
			if err != nil {
				return err
			}
			_, err = io.WriteString(a.stdout, block)
			return err
		},
	}
	return cmd
}

// sshConfigBlock writes the environment's known_hosts file and returns its
// OpenSSH Host block. A guest on a remote libvirt host is reached through
// that host (ProxyJump), as envctl itself reaches it.
func sshConfigBlock(e *env.Env) (string, error) {
	if e.Corrupt != "" {
		return "", fault.Infraf("environment %s: %s; `envctl down %s` removes it", e.ID, e.Corrupt, e.ID)
	}
	if e.SSHPort == 0 || e.HostKey == "" {
		return "", fault.Inputf("environment %s has no SSH endpoint yet (state %s); `envctl status %s` shows it", e.ID, e.State, e.ID)
	}
	alias := "envctl-" + e.ID
	known := e.Path("known_hosts")
	line := alias + " " + strings.TrimSpace(e.HostKey) + "\n"
	if err := os.WriteFile(known, []byte(line), 0o600); err != nil {
		return "", fault.Infraf("environment %s: %w", e.ID, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Host %s\n", alias)
	fmt.Fprintf(&b, "  HostName %s\n", e.SSHHost)
	fmt.Fprintf(&b, "  Port %d\n", e.SSHPort)
	fmt.Fprintf(&b, "  User %s\n", e.User)
	fmt.Fprintf(&b, "  IdentityFile %s\n", e.KeyPath())
	b.WriteString("  IdentitiesOnly yes\n")
	fmt.Fprintf(&b, "  HostKeyAlias %s\n", alias)
	fmt.Fprintf(&b, "  UserKnownHostsFile %s\n", known)
	b.WriteString("  StrictHostKeyChecking yes\n")
	b.WriteString("  LogLevel ERROR\n")
	if vm.IsRemote(e.URI) {
		if u, err := url.Parse(e.URI); err == nil && u.Host != "" {
			jump := u.Host
			if u.User != nil {
				jump = u.User.Username() + "@" + jump
			}
			fmt.Fprintf(&b, "  ProxyJump %s\n", jump)
		}
	}
	return b.String(), nil
}
