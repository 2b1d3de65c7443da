package crio

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/base/fault"
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
		case <-time.After(time.Second):
		}
	}
	t.Start = time.Since(start)
	return t, nil
}

// FileCheck is one installed file's digest against the one it must have.
type FileCheck struct {
	Path   string `json:"path"`
	Locked string `json:"locked_sha256"`
	Actual string `json:"actual_sha256"`
}

// Installed is one component as found in the guest.
type Installed struct {
	Role      profiles.Role `json:"role"`
	Component string        `json:"component"`
	Locked    string        `json:"locked"`
	Actual    string        `json:"actual"`
	Command   string        `json:"command"`
	// Files that differ from their locked digest.
	Changed []FileCheck `json:"changed,omitempty"`
	// Running is the version the running daemon reports through CRI
	// (CRI-O's RuntimeVersion).
	Running string `json:"running,omitempty"`
	// Commit is the source commit the binary reports, and LockedCommit the
	// lock's (a gomod artifact's module origin).
	Commit       string `json:"commit,omitempty"`
	LockedCommit string `json:"locked_commit,omitempty"`
	OK           bool   `json:"ok"`
}

// CommitOK reports whether the binary's commit is the lock's (nothing to
// compare when the lock records none).
func (it Installed) CommitOK() bool {
	if it.LockedCommit == "" {
		return true
	}
	return it.Commit != "" && (strings.HasPrefix(it.LockedCommit, it.Commit) || strings.HasPrefix(it.Commit, it.LockedCommit))
}

// VersionCommand is how a component reports its version in the guest.
func VersionCommand(comp *catalog.Component, src profiles.Source) string {
	if src.Kind() == profiles.KindPackage {
		return "dpkg-query -W -f '${Version}' " + guest.Quote(comp.Package)
	}
	dir := BinDir
	if comp.Directory {
		dir = CNIBinDir
	}
	return path.Join(dir, comp.Main()) + " " + strings.Join(comp.VersionArgs, " ")
}

var versionRE = regexp.MustCompile(`v?(\d+\.\d+(?:\.\d+)?(?:-[0-9A-Za-z.-]+)?)`)

// ParseVersion pulls the first version out of a --version output, keeping
// a prerelease ("1.34.0-rc.1"), or out of a Debian package version
// ("2.1.6+ds1-1" → "2.1.6").
func ParseVersion(out string) string {
	for _, line := range strings.Split(out, "\n") {
		low := strings.ToLower(line)
		if strings.Contains(low, "commit") || strings.Contains(low, "spec:") || strings.Contains(low, "go:") {
			continue
		}
		if m := versionRE.FindStringSubmatch(line); m != nil {
			v := m[1]
			// A Debian revision or build suffix is not a prerelease.
			if i := strings.IndexAny(v, "+~"); i > 0 {
				v = v[:i]
			}
			if strings.Contains(line, "+ds") || debianRev.MatchString(line) {
				v, _, _ = strings.Cut(v, "-")
			}
			return v
		}
	}
	return ""
}

var debianRev = regexp.MustCompile(`^\d[\w.+~]*-\d+[\w.+~]*$`)

var hexRE = regexp.MustCompile(`^[0-9a-f]{7,40}$`)

// ParseCommit reads the source commit a version output reports: CRI-O's
// "GitCommit:", runc's "commit:" (a hash, or git describe's "…-gHASH"), or
// semver build metadata ("v1.34.0+HASH", as envctl links crictl). It is ""
// when there is none or it is "unknown".
func ParseCommit(out string) string {
	for _, line := range strings.Split(out, "\n") {
		line = strings.TrimSpace(line)
		k, v, ok := strings.Cut(line, ":")
		if ok && (strings.EqualFold(k, "GitCommit") || strings.EqualFold(k, "commit")) {
			v = strings.TrimSpace(v)
			if i := strings.LastIndex(v, "-g"); i >= 0 && hexRE.MatchString(v[i+2:]) {
				v = v[i+2:]
			}
			if hexRE.MatchString(v) {
				return v
			}
			continue
		}
		for _, f := range strings.Fields(line) {
			if _, meta, ok := strings.Cut(f, "+"); ok && hexRE.MatchString(meta) {
				return meta
			}
		}
	}
	return ""
}

// RuntimeVersion reads the RuntimeVersion field of `crictl version`.
func RuntimeVersion(out string) string {
	for _, line := range strings.Split(out, "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "RuntimeVersion" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// DriftError names the components that are not what the lock says.
type DriftError struct{ Items []Installed }

func (e *DriftError) Error() string {
	var parts []string
	for _, it := range e.Items {
		for _, f := range it.Changed {
			actual := f.Actual
			if actual == "" {
				actual = "(missing)"
			}
			parts = append(parts, fmt.Sprintf("%s: %s has sha256 %s, the lock has %s", it.Component, f.Path, actual, f.Locked))
		}
		if !catalog.SameVersion(it.Actual, it.Locked) {
			parts = append(parts, fmt.Sprintf("%s: locked %s, installed %q (from `%s`)", it.Component, it.Locked, it.Actual, it.Command))
		}
		if !it.CommitOK() {
			got := it.Commit
			if got == "" {
				got = "none"
			}
			parts = append(parts, fmt.Sprintf("%s: locked commit %s, the binary reports %s (from `%s`)", it.Component, it.LockedCommit, got, it.Command))
		}
		if it.Running != "" && !catalog.SameVersion(it.Running, it.Locked) {
			parts = append(parts, fmt.Sprintf("%s: the running daemon reports RuntimeVersion %q through CRI, locked %s", it.Component, it.Running, it.Locked))
		}
	}
	return "drift: the guest does not run what the lock pins: " + strings.Join(parts, "; ") + "; the environment cannot be trusted, so nothing was tested"
}

// FaultClass implements fault.Classed: drift means the environment cannot
// be trusted, so the test cannot be run.
func (e *DriftError) FaultClass() fault.Class { return fault.Infra }

// Verify is the drift check. In the guest it compares the sha256 of every
// installed file with the lock, runs every component's version command,
// and asks the running CRI-O for its version through CRI (`crictl
// version`), comparing full versions, prerelease included.
func Verify(ctx context.Context, g Guest, s Stack) ([]Installed, error) {
	files := map[profiles.Role][]GuestFile{}
	var paths []string
	for _, p := range s.Parts {
		fs, err := s.files(p)
		if err != nil {
			return nil, err
		}
		files[p.Role] = fs
		for _, f := range fs {
			paths = append(paths, f.Remote)
		}
	}
	var sums map[string]string
	if len(paths) > 0 {
		var err error
		if sums, err = g.SHA256(ctx, paths...); err != nil {
			return nil, fault.Infraf("drift check: %w", err)
		}
	}
	var out, drift []Installed
	for _, p := range s.Parts {
		comp, err := s.catalog().Get(p.Component)
		if err != nil {
			return nil, fault.Inputf("lock: %v", err)
		}
		cmd := VersionCommand(comp, p.Source)
		res, err := g.Output(ctx, cmd)
		if ctx.Err() != nil {
			return nil, fault.Infraf("drift check: %w", ctx.Err())
		}
		it := Installed{Role: p.Role, Component: p.Component, Locked: p.Version, Command: cmd}
		if p.Origin != nil {
			it.LockedCommit = p.Origin.Commit
		}
		if err == nil {
			it.Actual, it.Commit = ParseVersion(res), ParseCommit(res)
		} else {
			it.Actual = "(" + strings.TrimSpace(firstLine(res)) + ")"
		}
		for _, f := range files[p.Role] {
			if sums[f.Remote] != f.SHA256 {
				it.Changed = append(it.Changed, FileCheck{Path: f.Remote, Locked: f.SHA256, Actual: sums[f.Remote]})
			}
		}
		it.OK = it.Actual != "" && catalog.SameVersion(it.Actual, p.Version) && len(it.Changed) == 0 && it.CommitOK()
		if p.Role == profiles.RoleCRIO {
			res, err := g.Output(ctx, "crictl version")
			it.Running = RuntimeVersion(res)
			if err != nil || it.Running == "" {
				it.Running = "(`crictl version` answered: " + strings.TrimSpace(firstLine(res)) + ")"
			}
			it.OK = it.OK && catalog.SameVersion(it.Running, p.Version)
		}
		if !it.OK {
			drift = append(drift, it)
		}
		out = append(out, it)
	}
	if len(drift) > 0 {
		return out, &DriftError{Items: drift}
	}
	return out, nil
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}
