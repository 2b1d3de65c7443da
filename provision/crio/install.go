package crio

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artdisk"
	"github.com/envctl/envctl/provision/artifacts"
	"github.com/envctl/envctl/provision/guest"
)

// Fixed install paths in the guest.
const (
	BinDir    = "/usr/local/bin"
	CNIBinDir = "/opt/cni/bin"
	Socket    = "/var/run/crio/crio.sock"
	// ConfigPath is envctl's CRI-O drop-in.
	ConfigPath = "/etc/crio/crio.conf.d/10-envctl.conf"
)

// Guest is what installing needs from a booted VM; *guest.Client
// implements it over SSH.
type Guest interface {
	Output(ctx context.Context, cmd string) (string, error)
	WriteFiles(ctx context.Context, files []guest.File, mode os.FileMode) error
	UploadVerified(ctx context.Context, files []guest.Upload, mode os.FileMode) error
	SHA256(ctx context.Context, paths ...string) (map[string]string, error)
}

// Part is one component of the stack with its files on the host.
type Part struct {
	lock.Part
	Files artifacts.Files
}

// Stack is the locked runtime stack to install, in install order.
type Stack struct {
	Parts []Part
	// PauseImage and RegistryHost configure CRI-O for the test registry.
	PauseImage   string
	RegistryHost string
	Catalog      *catalog.Catalog
	// FromDisk unpacks the files from the attached artifact disk instead
	// of uploading them over SFTP.
	FromDisk bool
	// Poll is how often CRI-O's socket is asked whether it answers (0:
	// every second, for software emulation, where each crictl costs the
	// starting daemon CPU it needs; under KVM a fifth of that).
	Poll time.Duration
}

func (s Stack) catalog() *catalog.Catalog {
	if s.Catalog == nil {
		return catalog.Default()
	}
	return s.Catalog
}

// Part returns the part in a role.
func (s Stack) Part(role profiles.Role) (Part, bool) {
	for _, p := range s.Parts {
		if p.Role == role {
			return p, true
		}
	}
	return Part{}, false
}

// Runtime names the OCI runtime (runc or crun).
func (s Stack) Runtime() string {
	p, _ := s.Part(profiles.RoleRuntime)
	return p.Component
}

// GuestFile is one file a part puts into the guest.
type GuestFile struct {
	Name   string // file name in the guest's bin directory
	Local  string // on the host
	Remote string // in the guest
	// SHA256 is what the file must hash to: the lock's digest when the
	// lock records one, else the digest recorded when it entered the cache.
	SHA256 string
}

// files lists what a part puts into the guest.
func (s Stack) files(p Part) ([]GuestFile, error) {
	if p.Files.InGuest {
		return nil, nil
	}
	comp, err := s.catalog().Get(p.Component)
	if err != nil {
		return nil, fault.Inputf("lock: %v", err)
	}
	var out []GuestFile
	add := func(b artifacts.Binary, dir string) error {
		sum := b.SHA256
		if locked, ok := p.Binaries[b.Name]; ok {
			sum = locked
		}
		if sum == "" {
			return fault.Infraf("%s %s: %s has no recorded digest to verify it against", p.Component, p.Version, b.Path)
		}
		out = append(out, GuestFile{Name: b.Name, Local: b.Path, Remote: dir + "/" + b.Name, SHA256: sum})
		return nil
	}
	list := p.Files.List()
	if comp.Directory {
		for _, b := range list {
			if err := add(b, CNIBinDir); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	for _, name := range comp.Binaries {
		i := slices.IndexFunc(list, func(b artifacts.Binary) bool { return b.Name == name })
		if i < 0 {
			return nil, fault.Infraf("%s %s: no %s among its files", p.Component, p.Version, name)
		}
		if err := add(list[i], BinDir); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// Uploads lists every file the stack puts into the guest, with the
// digest it must have there.
func (s Stack) Uploads() ([]guest.Upload, error) {
	var out []guest.Upload
	for _, p := range s.Parts {
		files, err := s.files(p)
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			out = append(out, guest.Upload{Local: f.Local, Remote: f.Remote, SHA256: f.SHA256})
		}
	}
	return out, nil
}

// RuntimePath is where CRI-O finds the OCI runtime: installed by envctl,
// else the guest's package.
func (s Stack) RuntimePath() string {
	if p, ok := s.Part(profiles.RoleRuntime); ok && p.Files.InGuest {
		return "/usr/bin/" + p.Component
	}
	return BinDir + "/" + s.Runtime()
}

// ConmonPath is where CRI-O finds conmon: installed by envctl, else the
// guest's package.
func (s Stack) ConmonPath() string {
	if p, ok := s.Part(profiles.RoleConmon); ok && !p.Files.InGuest {
		return BinDir + "/conmon"
	}
	return "/usr/bin/conmon"
}

// CNIPluginDir is where the CNI plugins are: installed by envctl, else
// the guest's package (Debian's /usr/lib/cni).
func (s Stack) CNIPluginDir() string {
	if p, ok := s.Part(profiles.RoleCNI); ok && !p.Files.InGuest {
		return CNIBinDir
	}
	return "/usr/lib/cni"
}

// The CRI-O drop-in, as a typed document for go-toml.
type (
	crioDropIn struct {
		Crio crioTable `toml:"crio"`
	}
	crioTable struct {
		StorageDriver string       `toml:"storage_driver"`
		API           apiTable     `toml:"api"`
		Runtime       runtimeTable `toml:"runtime"`
		Image         imageTable   `toml:"image"`
		Network       networkTable `toml:"network"`
	}
	apiTable struct {
		Listen string `toml:"listen"`
	}
	runtimeTable struct {
		DefaultRuntime string                    `toml:"default_runtime"`
		CgroupManager  string                    `toml:"cgroup_manager"`
		PinnsPath      string                    `toml:"pinns_path"`
		LogLevel       string                    `toml:"log_level"`
		Runtimes       map[string]runtimeHandler `toml:"runtimes"`
	}
	runtimeHandler struct {
		RuntimePath   string `toml:"runtime_path"`
		RuntimeType   string `toml:"runtime_type"`
		RuntimeRoot   string `toml:"runtime_root"`
		MonitorPath   string `toml:"monitor_path"`
		MonitorCgroup string `toml:"monitor_cgroup"`
	}
	imageTable struct {
		PauseImage      string `toml:"pause_image"`
		PauseCommand    string `toml:"pause_command"`
		SignaturePolicy string `toml:"signature_policy"`
	}
	networkTable struct {
		NetworkDir string   `toml:"network_dir"`
		PluginDirs []string `toml:"plugin_dirs"`
	}
)

// Config renders CRI-O's drop-in: the locked runtime and conmon pinned by
// path, systemd cgroups, pinns, the test registry's pause image and CNI.
func (s Stack) Config() (string, error) {
	rt := s.Runtime()
	doc := crioDropIn{Crio: crioTable{
		StorageDriver: "overlay",
		API:           apiTable{Listen: Socket},
		Runtime: runtimeTable{
			DefaultRuntime: rt, CgroupManager: "systemd", PinnsPath: BinDir + "/pinns",
			// debug, as upstream's test helpers run crio (-l debug): a
			// request's error (ImageVolumeMountFailed: …) is only logged
			// there, and the invalid-sub-path step reads it from the log.
			LogLevel: "debug",
			Runtimes: map[string]runtimeHandler{rt: {
				RuntimePath: s.RuntimePath(), RuntimeType: "oci", RuntimeRoot: "/run/" + rt,
				MonitorPath: s.ConmonPath(), MonitorCgroup: "system.slice",
			}},
		},
		Image:   imageTable{PauseImage: s.PauseImage, PauseCommand: "/pause", SignaturePolicy: "/etc/containers/policy.json"},
		Network: networkTable{NetworkDir: "/etc/cni/net.d", PluginDirs: []string{"/usr/lib/cni", CNIBinDir}},
	}}
	b, err := toml.Marshal(doc)
	if err != nil {
		return "", err
	}
	return "# Written by envctl: the locked runtime stack, pinned by path.\n" + string(b), nil
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
	// Via says how the files got into the guest, and why when the
	// artifact disk was not used.
	Via string
}

// How the files get into the guest.
const (
	ViaDisk = "artifact disk"
	ViaSFTP = "sftp"
)

// StartTimeout bounds how long CRI-O may take to answer after it starts.
var StartTimeout = 90 * time.Second

// Install uploads the stack, configures and starts CRI-O, and waits until
// `crictl info` answers.
func Install(ctx context.Context, g Guest, s Stack) (Timings, error) {
	var t Timings
	start := time.Now()
	uploads, err := s.Uploads()
	if err != nil {
		return t, err
	}
	t.Via = ViaSFTP
	if s.FromDisk {
		// The disk was built from the verified files, each checked against
		// its digest as it was written; the drift check compares every
		// installed file with the lock's digest before the test.
		out, err := g.Output(ctx, artdisk.ExtractCommand())
		var exit *guest.ExitError
		switch {
		case err == nil:
			t.Via = ViaDisk
		case errors.As(err, &exit) && ctx.Err() == nil:
			t.Via = fmt.Sprintf("%s (the artifact disk could not be unpacked: %s)", ViaSFTP, firstLine(out))
		default:
			return t, fault.Infraf("install: unpack the artifact disk: %w", err)
		}
	}
	if t.Via != ViaDisk {
		if err := g.UploadVerified(ctx, uploads, 0o755); err != nil {
			return t, fault.Infraf("install: %w", err)
		}
	}
	t.Upload = time.Since(start)

	start = time.Now()
	conf, err := s.Config()
	if err != nil {
		return t, fault.Infraf("install: CRI-O config: %w", err)
	}
	files := []guest.File{
		{Path: ConfigPath, Data: []byte(conf)},
		{Path: "/etc/containers/registries.conf", Data: fmt.Appendf(nil, registriesConf, s.RegistryHost)},
		{Path: "/etc/containers/policy.json", Data: []byte(policyJSON)},
		{Path: "/etc/crictl.yaml", Data: []byte(crictlYAML)},
		{Path: "/etc/cni/net.d/10-envctl.conflist", Data: []byte(cniConf)},
		{Path: "/etc/systemd/network/05-cni-veth.link", Data: []byte(vethLink)},
		{Path: "/etc/systemd/system/crio.service", Data: []byte(unit)},
	}
	if err := g.WriteFiles(ctx, files, 0o644); err != nil {
		return t, fault.Infraf("install: %w", err)
	}
	if out, err := g.Output(ctx, "udevadm control --reload; modprobe overlay; modprobe br_netfilter 2>/dev/null; systemctl daemon-reload"); err != nil {
		return t, fault.Infraf("install: configure: %v: %s", err, out)
	}
	t.Configure = time.Since(start)

	start = time.Now()
	if out, err := g.Output(ctx, "systemctl start crio"); err != nil {
		journal, _ := g.Output(ctx, "journalctl -u crio --no-pager -n 30")
		return t, fault.Infraf("CRI-O did not start: %v: %s\n%s", err, strings.TrimSpace(out), journal)
	}
	wctx, cancel := context.WithTimeout(ctx, StartTimeout)
	defer cancel()
	for {
		out, err := g.Output(wctx, "crictl info >/dev/null && echo ready")
		if err == nil && strings.Contains(out, "ready") {
			break
		}
		select {
		case <-wctx.Done():
			if ctx.Err() != nil {
				return t, fault.Infraf("waiting for CRI-O: %w", ctx.Err())
			}
			journal, _ := g.Output(ctx, "journalctl -u crio --no-pager -n 30")
			return t, fault.Infraf("CRI-O's socket %s did not answer within %s: %s\n%s", Socket, StartTimeout, strings.TrimSpace(out), journal)
		case <-time.After(cmp.Or(s.Poll, time.Second)):
		}
	}
	t.Start = time.Since(start)
	return t, nil
}
