// Package cellruntest ships what pipeline tests need to run cells with no
// libvirt and no VM: a fake artifact fetcher and image source, locked
// cells of the usual shape, and a harness whose fake hypervisor boots SSH
// guests that behave like a VM with CRI-O installed.
package cellruntest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artifacts"
	"github.com/envctl/envctl/provision/cellrun"
	"github.com/envctl/envctl/provision/crio/criotest"
	"github.com/envctl/envctl/provision/env"
	"github.com/envctl/envctl/provision/guest/guesttest"
	"github.com/envctl/envctl/provision/testimages"
	"github.com/envctl/envctl/provision/vm"
	"github.com/envctl/envctl/provision/vm/vmtest"
)

// Fetcher hands out real files for built components and marks package
// components as the guest's. It counts its calls by artifact key.
type Fetcher struct {
	Dir   string
	mu    sync.Mutex
	Calls map[string]int
	Fail  error
}

// Fetch implements cellrun.Fetcher.
func (f *Fetcher) Fetch(ctx context.Context, cell lock.LockedCell, c lock.Part) (artifacts.Files, error) {
	f.mu.Lock()
	if f.Calls == nil {
		f.Calls = map[string]int{}
	}
	f.Calls[c.Key()]++
	f.mu.Unlock()
	if f.Fail != nil {
		return artifacts.Files{}, f.Fail
	}
	if c.Source == profiles.SourcePackage {
		return artifacts.Files{InGuest: true}, nil
	}
	// Cells fetched at once share files: write each once.
	f.mu.Lock()
	defer f.mu.Unlock()
	out := artifacts.Files{Binaries: map[string]string{}}
	for n, content := range FakeBinaries(c.Component, c.Version) {
		p := filepath.Join(f.Dir, c.Component+"-"+c.Version, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return out, err
		}
		if old, err := os.ReadFile(p); err != nil || string(old) != content {
			if err := os.WriteFile(p, []byte(content), 0o755); err != nil {
				return out, err
			}
		}
		out.Binaries[n] = p
	}
	return out.Hashed()
}

// FetchTool implements cellrun.Fetcher: a fake bats package, and a CRI-O
// test tree whose common.sh names upstream's images, with two bats files.
func (f *Fetcher) FetchTool(ctx context.Context, t lock.Artifact) (artifacts.Files, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.Calls == nil {
		f.Calls = map[string]int{}
	}
	f.Calls[t.Key()]++
	if f.Fail != nil {
		return artifacts.Files{}, f.Fail
	}
	dir := filepath.Join(f.Dir, "tool-"+t.Component+"-"+t.Version)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return artifacts.Files{}, err
	}
	write := func(name string, data []byte) (string, error) {
		p := filepath.Join(dir, name)
		return p, os.WriteFile(p, data, 0o755)
	}
	out := artifacts.Files{Binaries: map[string]string{}}
	switch t.Component {
	case lock.ToolBats:
		p, err := write(artifacts.BatsDeb, []byte("!<arch> fake bats "+t.Version))
		if err != nil {
			return out, err
		}
		out.Binaries[artifacts.BatsDeb] = p
	default:
		var buf bytes.Buffer
		tw := tar.NewWriter(&buf)
		common := []byte("IMAGES=(\n    registry.k8s.io/pause:3.10\n    quay.io/crio/fedora-crio-ci:latest\n    quay.io/crio/hello-wasm:latest\n)\n")
		bats := []byte("#!/usr/bin/env bats\n")
		for _, f := range []struct {
			name string
			data []byte
		}{{"common.sh", common}, {"oci_volumes.bats", bats}, {"image.bats", bats}} {
			_ = tw.WriteHeader(&tar.Header{Name: f.name, Mode: 0o644, Size: int64(len(f.data))})
			_, _ = tw.Write(f.data)
		}
		_ = tw.Close()
		for name, data := range map[string][]byte{artifacts.CRIOTestTar: buf.Bytes(), artifacts.Copyimg: []byte("#!copyimg")} {
			p, err := write(name, data)
			if err != nil {
				return out, err
			}
			out.Binaries[name] = p
		}
	}
	return out.Hashed()
}

// FakeBinaries is what the fake fetcher makes for a component: one small
// file per binary that names itself and its version ("#!crictl 1.34.0"),
// which criotest's guest answers --version with.
func FakeBinaries(component, version string) map[string]string {
	out := map[string]string{}
	for _, n := range map[string][]string{"cri-o": {"crio", "pinns"}, "cri-tools": {"crictl"}, "runc": {"runc"}}[component] {
		out[n] = "#!" + n + " " + version
	}
	return out
}

// Cached implements cellrun.Cached.
func (f *Fetcher) Cached(cell lock.LockedCell, c lock.Part) (artifacts.Files, bool) {
	files, err := f.Fetch(context.Background(), cell, c)
	return files, err == nil
}

// Total counts every Fetch call.
func (f *Fetcher) Total() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, c := range f.Calls {
		n += c
	}
	return n
}

// Images is a fake image source.
type Images struct{ Fail error }

// Ensure implements cellrun.ImageSource.
func (f Images) Ensure(ctx context.Context, ref lock.Image) (images.Files, error) {
	return images.Files{Disk: "/cache/base.raw", Format: "raw", Kernel: "/cache/vmlinuz", Initrd: "/cache/initrd", FastSeed: true}, f.Fail
}

// Cell is a locked cell of CRI-O 1.34.0, the given cri-tools, runc 1.3.6
// and the guest's conmon and CNI plugins; name defaults to "p".
func Cell(name, crictl string) lock.LockedCell {
	art := func(role profiles.Role, comp, v string, src profiles.Source) lock.Part {
		a := lock.Artifact{Component: comp, Version: v, Source: src}
		if src == profiles.SourcePackage {
			a.Package = map[string]string{"conmon": "conmon", "cni-plugins": "containernetworking-plugins"}[comp]
		}
		// The lock records the digests of what the fake fetcher makes.
		for n, content := range FakeBinaries(comp, v) {
			if a.Binaries == nil {
				a.Binaries = map[string]string{}
			}
			sum := sha256.Sum256([]byte(content))
			a.Binaries[n] = hex.EncodeToString(sum[:])
		}
		return lock.Part{Role: role, Artifact: a}
	}
	if name == "" {
		name = "p"
	}
	return lock.LockedCell{Profile: "p", Name: name, Test: profiles.TestImageVolume,
		VM:    profiles.VM{CPUs: 2, Memory: 2 << 30, Disk: 10 << 30},
		Image: lock.Image{Name: "debian-12", Kind: lock.ImageLocal, Digest: "sha256:" + strings.Repeat("a", 64), Format: "raw"},
		Components: []lock.Part{
			art(profiles.RoleCRIO, "cri-o", "1.34.0", profiles.SourceGoMod),
			art(profiles.RoleCRITools, "cri-tools", crictl, profiles.SourceGoMod),
			art(profiles.RoleRuntime, "runc", "1.3.6", profiles.SourceGoMod),
			art(profiles.RoleConmon, "conmon", "2.1.6", profiles.SourcePackage),
			art(profiles.RoleCNI, "cni-plugins", "1.1.1", profiles.SourcePackage),
		},
		Tools: []lock.Artifact{
			{Component: lock.ToolBats, Version: "1.11.1-1", Source: profiles.SourceRelease, URL: "http://deb.example/bats_1.11.1-1_all.deb", SHA256: strings.Repeat("b", 64)},
			{Component: lock.ToolCRIOTests, Version: "1.34.0", Source: profiles.SourceGoMod, Module: lock.CRIOModule, ModuleSum: "h1:fake", Recipe: "crio-tests"},
		}}
}

// Harness runs cells on a fake hypervisor whose guests behave like a VM
// with envctl's stack: versions as criotest.Versions, a working crictl.
type Harness struct {
	Driver *vmtest.Driver
	Fetch  *Fetcher
	Opts   cellrun.Options
	// Tweak scripts each guest further as it boots.
	Tweak  func(*criotest.Stack, *guesttest.Server)
	mu     sync.Mutex
	events []string
}

// workloadDir caches the static test workload across tests.
var workloadDir = filepath.Join(os.TempDir(), "envctl-cellruntest-workload")

// New makes a harness.
func New(t testing.TB) *Harness {
	t.Helper()
	h := &Harness{Driver: vmtest.New(), Fetch: &Fetcher{Dir: t.TempDir()}}
	h.Driver.Files = t.TempDir()
	h.Driver.BootGuests(t, func(srv *guesttest.Server) {
		s := criotest.Install(srv)
		h.mu.Lock()
		tweak := h.Tweak
		h.mu.Unlock()
		if tweak != nil {
			tweak(s, srv)
		}
	})
	workload, err := testimages.WorkloadBinary(context.Background(), workloadDir, "")
	if err != nil {
		t.Fatal(err)
	}
	c, err := cache.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h.Opts = cellrun.Options{
		Cache: c,
		VM:    vm.Options{URI: "fake:///system", Store: env.Store{Dir: t.TempDir()}, Connect: h.Driver.Connect, BootTimeout: 20 * time.Second},
		Fetch: h.Fetch, Images: Images{}, Workload: workload, TestImages: cellrun.LocalImages,
		Progress: func(e cellrun.Event) {
			h.mu.Lock()
			defer h.mu.Unlock()
			if e.Done {
				h.events = append(h.events, e.Phase+" done")
			} else {
				h.events = append(h.events, e.Phase)
			}
		},
	}
	return h
}

// Events lists the phase events seen so far.
func (h *Harness) Events() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.events...)
}

// AssertClean fails the test when a domain, volume or environment is left.
func (h *Harness) AssertClean(t testing.TB) {
	t.Helper()
	if d := h.Driver.DomainNames(); len(d) != 0 {
		t.Errorf("domains left: %v", d)
	}
	for _, v := range h.Driver.VolumeNames() {
		if !strings.Contains(v, "envctl-base-") {
			t.Errorf("volume left: %v", v)
		}
	}
	if envs, _ := h.Opts.VM.Store.List(); len(envs) != 0 {
		t.Errorf("environments left: %d", len(envs))
	}
}
