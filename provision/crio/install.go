package crio

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artifacts"
	"github.com/envctl/envctl/provision/fault"
	"github.com/envctl/envctl/provision/guest"
)

// Fixed install paths in the guest.
const (
	BinDir    = "/usr/local/bin"
	CNIBinDir = "/opt/cni/bin"
	Socket    = "/var/run/crio/crio.sock"
)

// Stack is the resolved set of binaries to install, by role.
type Stack struct {
	Artifacts map[string]lock.Artifact
	Files     map[string]artifacts.Files
	// PauseImage and RegistryHost configure CRI-O for the test registry.
	PauseImage   string
	RegistryHost string
}

// Runtime returns the OCI runtime's name (runc or crun).
func (s Stack) Runtime() string { return s.Artifacts[profiles.RoleRuntime].Component }

// paths computes where each binary lands in the guest.
func (s Stack) paths() (uploads map[string]string, conmon, cniDirs string) {
	uploads = map[string]string{}
	for _, role := range []string{profiles.RoleCRIO, profiles.RoleCRITools, profiles.RoleRuntime, profiles.RoleConmon} {
		f := s.Files[role]
		for name, local := range f.Binaries {
			switch {
			case role == profiles.RoleCRIO && (name == "crio" || name == "pinns"),
				role == profiles.RoleCRITools && name == "crictl",
				role == profiles.RoleRuntime && name == s.Runtime(),
				role == profiles.RoleConmon && name == "conmon":
				uploads[local] = BinDir + "/" + name
			}
		}
	}
	conmon = "/usr/bin/conmon"
	if !s.Files[profiles.RoleConmon].InGuest && len(s.Files[profiles.RoleConmon].Binaries) > 0 {
		conmon = BinDir + "/conmon"
	}
	cniDirs = `"/usr/lib/cni", "` + CNIBinDir + `"`
	return uploads, conmon, cniDirs
}

// Config renders CRI-O's drop-in configuration.
func (s Stack) Config(conmon, cniDirs string) string {
	rt := s.Runtime()
	return fmt.Sprintf(`# Written by envctl: the locked runtime stack, pinned by path.
[crio]
storage_driver = "overlay"

[crio.api]
listen = %q

[crio.runtime]
default_runtime = %q
cgroup_manager = "systemd"
pinns_path = "%s/pinns"
log_level = "info"

[crio.runtime.runtimes.%s]
runtime_path = "%s/%s"
runtime_type = "oci"
runtime_root = "/run/%s"
monitor_path = %q
monitor_cgroup = "system.slice"

[crio.image]
pause_image = %q
pause_command = "/pause"
signature_policy = "/etc/containers/policy.json"

[crio.network]
network_dir = "/etc/cni/net.d"
plugin_dirs = [%s]
`, Socket, rt, BinDir, rt, BinDir, rt, rt, conmon, s.PauseImage, cniDirs)
}

const registriesConf = `# Written by envctl: the test registry, reached through an SSH remote forward.
unqualified-search-registries = []

[[registry]]
location = %q
insecure = true
`

const policyJSON = `{"default": [{"type": "insecureAcceptAnything"}]}
`

// disable-pull-on-run: the test pulls explicitly, so that CRI-O (not
// crictl) decides what happens to an image that is not there.
const crictlYAML = `runtime-endpoint: unix:///var/run/crio/crio.sock
image-endpoint: unix:///var/run/crio/crio.sock
timeout: 120
disable-pull-on-run: true
`

// cniVersion 0.3.1 skips CNI CHECK, which races with udev's MAC rewrite.
const cniConf = `{
  "cniVersion": "0.3.1",
  "name": "envctl",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "10.85.0.0/16"}]]}},
    {"type": "loopback"}
  ]
}
`

// Keep udev from rewriting the host-side veth MAC after the bridge plugin recorded it.
const vethLink = `[Match]
OriginalName=veth*

[Link]
MACAddressPolicy=none
`

const unit = `[Unit]
Description=CRI-O (installed by envctl)
After=network.target

[Service]
Type=notify
ExecStart=/usr/local/bin/crio
Restart=no
Delegate=yes
KillMode=process
LimitNOFILE=1048576
TasksMax=infinity

[Install]
WantedBy=multi-user.target
`

// Timings of the install phases.
type Timings struct {
	Upload, Configure, Start time.Duration
}

// Install uploads the stack, configures and starts CRI-O, and waits until
// `crictl info` answers.
func Install(ctx context.Context, c *guest.Client, s Stack) (Timings, error) {
	var t Timings
	start := time.Now()
	uploads, conmon, cniDirs := s.paths()
	if err := c.UploadVerified(ctx, uploads, 0o755); err != nil {
		return t, fault.Infraf("install: %w", err)
	}
	if cni := s.Files[profiles.RoleCNI]; cni.CNIDir != "" {
		entries, _ := os.ReadDir(cni.CNIDir)
		m := map[string]string{}
		for _, e := range entries {
			m[cni.CNIDir+"/"+e.Name()] = CNIBinDir + "/" + e.Name()
		}
		if err := c.UploadVerified(ctx, m, 0o755); err != nil {
			return t, fault.Infraf("install CNI plugins: %w", err)
		}
	}
	t.Upload = time.Since(start)

	start = time.Now()
	files := map[string]string{
		"/etc/crio/crio.conf.d/10-envctl.conf":  s.Config(conmon, cniDirs),
		"/etc/containers/registries.conf":       fmt.Sprintf(registriesConf, s.RegistryHost),
		"/etc/containers/policy.json":           policyJSON,
		"/etc/crictl.yaml":                      crictlYAML,
		"/etc/cni/net.d/10-envctl.conflist":     cniConf,
		"/etc/systemd/network/05-cni-veth.link": vethLink,
		"/etc/systemd/system/crio.service":      unit,
	}
	for path, content := range files {
		if err := c.WriteFile(ctx, path, []byte(content), 0o644); err != nil {
			return t, fault.Infraf("install: %w", err)
		}
	}
	if out, err := c.Output(ctx, "udevadm control --reload; modprobe overlay; modprobe br_netfilter 2>/dev/null; systemctl daemon-reload"); err != nil {
		return t, fault.Infraf("install: configure: %v: %s", err, out)
	}
	t.Configure = time.Since(start)

	start = time.Now()
	if out, err := c.Output(ctx, "systemctl start crio"); err != nil {
		journal, _ := c.Output(ctx, "journalctl -u crio --no-pager -n 30")
		return t, fault.Infraf("CRI-O did not start: %v: %s\n%s", err, strings.TrimSpace(out), journal)
	}
	deadline := time.Now().Add(90 * time.Second)
	for {
		out, err := c.Output(ctx, "crictl info >/dev/null && echo ready")
		if err == nil && strings.Contains(out, "ready") {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			journal, _ := c.Output(ctx, "journalctl -u crio --no-pager -n 30")
			return t, fault.Infraf("CRI-O's socket %s did not answer within 90s: %s\n%s", Socket, strings.TrimSpace(out), journal)
		}
		time.Sleep(time.Second)
	}
	t.Start = time.Since(start)
	return t, nil
}

// Installed is one component's version as found in the guest.
type Installed struct {
	Role, Component, Locked, Actual, Command string
	OK                                       bool
}

var versionRE = regexp.MustCompile(`v?(\d+\.\d+(?:\.\d+)?)`)

// versionCommand is how each component reports its version in the guest.
func versionCommand(a lock.Artifact, runtime string) string {
	if a.Source == profiles.SourcePackage {
		return "dpkg-query -W -f '${Version}' " + a.Package
	}
	switch a.Component {
	case "cri-o":
		return BinDir + "/crio --version"
	case "cri-tools":
		return BinDir + "/crictl --version"
	case "runc", "crun":
		return BinDir + "/" + runtime + " --version"
	case "conmon":
		return "/usr/local/bin/conmon --version"
	case "cni-plugins":
		return CNIBinDir + "/bridge --version"
	}
	return ""
}

// ParseVersion pulls the first version number out of a --version output or
// a Debian package version ("2.1.6+ds1-1" → "2.1.6").
func ParseVersion(out string) string {
	for _, line := range strings.Split(out, "\n") {
		low := strings.ToLower(line)
		if strings.Contains(low, "commit") || strings.Contains(low, "spec:") || strings.Contains(low, "go:") {
			continue
		}
		if m := versionRE.FindStringSubmatch(line); m != nil {
			return m[1]
		}
	}
	return ""
}

// DriftError names a component whose installed version is not the locked one.
type DriftError struct{ Items []Installed }

func (e *DriftError) Error() string {
	var parts []string
	for _, it := range e.Items {
		parts = append(parts, fmt.Sprintf("%s: locked %s, installed %q (from `%s`)", it.Component, it.Locked, it.Actual, it.Command))
	}
	return "drift: the guest does not run the locked versions: " + strings.Join(parts, "; ") + "; check the artifact source, then run `envctl lock` if the lock is what is wrong"
}

// Verify runs every component's version command in the guest and compares
// the result with the lock.
func Verify(ctx context.Context, c *guest.Client, s Stack) ([]Installed, error) {
	var out []Installed
	var drift []Installed
	for _, role := range profiles.Roles {
		a, ok := s.Artifacts[role]
		if !ok {
			continue
		}
		cmd := versionCommand(a, s.Runtime())
		res, err := c.Output(ctx, cmd)
		it := Installed{Role: role, Component: a.Component, Locked: a.Version, Command: cmd}
		if err == nil {
			it.Actual = ParseVersion(res)
		} else {
			it.Actual = "(" + strings.TrimSpace(firstLine(res)) + ")"
		}
		it.OK = it.Actual != "" && sameVersion(it.Actual, a.Version)
		if !it.OK {
			drift = append(drift, it)
		}
		out = append(out, it)
	}
	if len(drift) > 0 {
		return out, &fault.Error{Kind: fault.Infra, Err: &DriftError{Items: drift}}
	}
	return out, nil
}

func sameVersion(a, b string) bool {
	norm := func(s string) string {
		s = strings.TrimPrefix(s, "v")
		if strings.Count(s, ".") == 1 {
			s += ".0"
		}
		return s
	}
	return norm(a) == norm(b)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
