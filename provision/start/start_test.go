package start_test

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/env"
	"github.com/envctl/envctl/provision/start"
	"github.com/envctl/envctl/provision/vm"
	"github.com/envctl/envctl/provision/vm/vmtest"
	"github.com/envctl/envctl/provision/warm"
)

func TestNoSavedGuests(t *testing.T) {
	store := &warm.Store{Dir: "/nowhere"}
	base := start.Spec{Warm: store, Tests: true, VM: vm.Options{URI: "qemu:///system", Network: vm.NetworkUser}}
	tests := []struct {
		name string
		edit func(*start.Spec)
		want string
	}{
		{"a local tested run may", func(*start.Spec) {}, ""},
		{"no store", func(s *start.Spec) { s.Warm = nil }, "warm starts are off"},
		{"--cold", func(s *start.Spec) { s.Cold = true }, "--cold"},
		{"--keep", func(s *start.Spec) { s.Keep = true }, "--keep"},
		{"no test", func(s *start.Spec) { s.Tests = false }, "no test runs"},
		{"nat", func(s *start.Spec) { s.VM.Network = vm.NetworkNAT }, "user-mode networking"},
		{"remote host", func(s *start.Spec) { s.VM.URI = "qemu+ssh://ci@host/system" }, "local hypervisor only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sp := base
			tt.edit(&sp)
			if got := sp.NoSavedGuests(); !strings.Contains(got, tt.want) || (tt.want == "") != (got == "") {
				t.Errorf("NoSavedGuests() = %q, want %q", got, tt.want)
			}
		})
	}
}

// Both keys come from one description of the guest: what a post-boot
// state depends on changes both; what only a warm state depends on
// changes only the warm key.
func TestKeys(t *testing.T) {
	g := start.Guest{Image: lock.Image{Digest: "sha256:a", Kernel: "sha256:k", Initrd: "sha256:i"}, CPUs: 2, Memory: 2 << 30, Disk: 10 << 30,
		VM: vm.Options{URI: "qemu:///system", Accel: vm.AccelTCG, Network: vm.NetworkUser}, Cell: "c1", Artifacts: "sha256:d", Registry: "localhost:5000", Pause: "p"}
	tests := []struct {
		name             string
		edit             func(*start.Guest)
		warm, postBootTo bool // which keys change
	}{
		{"image", func(g *start.Guest) { g.Image.Digest = "sha256:b" }, false, true},
		{"kernel", func(g *start.Guest) { g.Image.Kernel = "sha256:k2" }, false, true},
		{"cpus", func(g *start.Guest) { g.CPUs = 1 }, true, true},
		{"accel", func(g *start.Guest) { g.VM.Accel = vm.AccelKVM }, true, true},
		{"kernel args", func(g *start.Guest) { g.VM.KernelArgs = "quiet" }, true, true},
		{"seed mode", func(g *start.Guest) { g.VM.Seed = vm.SeedFull }, true, true},
		{"online (the network a guest can reach)", func(g *start.Guest) { g.VM.Online = true }, true, true},
		{"network mode", func(g *start.Guest) { g.VM.Network = vm.NetworkNAT }, true, true},
		{"the cell's lock", func(g *start.Guest) { g.Cell = "c2" }, true, false},
		{"the artifact disk", func(g *start.Guest) { g.Artifacts = "sha256:e" }, true, false},
		{"the pause image", func(g *start.Guest) { g.Pause = "q" }, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := g
			tt.edit(&h)
			if changed := h.WarmKey() != g.WarmKey(); changed != tt.warm {
				t.Errorf("warm key changed: %v, want %v", changed, tt.warm)
			}
			if changed := h.PostBootKey() != g.PostBootKey(); changed != tt.postBootTo {
				t.Errorf("post-boot key changed: %v, want %v", changed, tt.postBootTo)
			}
		})
	}
	// The image's own digests only enter through the warm key's cell hash.
	if g.WarmKey() == g.PostBootKey() {
		t.Error("the two keys are the same")
	}
	// Another build of envctl never restores this one's states.
	if warm.BuildIdentity() == "unknown" || len(warm.BuildIdentity()) != 16 {
		t.Errorf("build identity %q", warm.BuildIdentity())
	}
}

// fixture is a fake hypervisor whose domains answer SSH, and the stores.
type fixture struct {
	drv          *vmtest.Driver
	vm           vm.Options
	warm, shared *warm.Store
	artifact     string
}

func newFixture(t *testing.T) *fixture {
	d := vmtest.New()
	d.Files = t.TempDir()
	d.BootGuests(t, nil)
	cache := t.TempDir()
	art := filepath.Join(t.TempDir(), "artifacts.raw")
	if err := os.WriteFile(art, make([]byte, 1024), 0o644); err != nil {
		t.Fatal(err)
	}
	return &fixture{drv: d, artifact: art,
		vm:   vm.Options{URI: "fake:///system", Store: env.Store{Dir: t.TempDir()}, Connect: d.Connect, BootTimeout: 20 * time.Second},
		warm: &warm.Store{Dir: filepath.Join(cache, "warm")}, shared: &warm.Store{Dir: filepath.Join(cache, "boot")}}
}

func (f *fixture) spec(cell string) start.Spec {
	return start.Spec{
		VM: f.vm,
		Boot: vm.BootSpec{Profile: "p", Cell: cell, CPUs: 2, Memory: 2 << 30, Disk: 10 << 30,
			Image:        images.Files{Disk: "/cache/base.raw", Format: "raw", Kernel: "/cache/vmlinuz", Initrd: "/cache/initrd", FastSeed: true},
			ArtifactDisk: f.artifact, ArtifactSerial: "envctl-artifacts"},
		Guest: start.Guest{Image: lock.Image{Digest: "sha256:a"}, CPUs: 2, Memory: 2 << 30, Disk: 10 << 30, VM: f.vm, Cell: cell},
		Warm:  f.warm, Shared: f.shared, Tests: true,
	}
}

// run starts, optionally keeps a warm state, and tears down.
func (f *fixture) run(t *testing.T, sp start.Spec, saveWarm bool) *start.Started {
	t.Helper()
	st, err := start.Start(context.Background(), sp)
	if err != nil {
		t.Fatalf("start: %v", err)
	}
	if saveWarm && st.WarmKey != "" && st.How != start.Warm {
		if note, _ := st.SaveWarm(context.Background(), f.warm, "p", sp.Boot.Cell, json.RawMessage(`[{"component":"cri-o"}]`)); note != "" {
			t.Fatalf("save: %s", note)
		}
	}
	if err := st.Machine.Teardown(context.Background()); err != nil {
		t.Fatal(err)
	}
	st.Release()
	return st
}

// The rules, each from a store prepared by earlier starts: what comes up,
// and why.
func TestStartChoosesTheWay(t *testing.T) {
	tests := []struct {
		name    string
		prepare func(t *testing.T, f *fixture) // runs before the start under test
		edit    func(sp *start.Spec)
		how     start.How
		why     string
		attach  bool // the artifact disk was hot-plugged
		after   func(t *testing.T, f *fixture, st *start.Started)
	}{
		{name: "nothing saved: a boot into a slot, saving a post-boot state",
			how: start.Cold, why: "saved a post-boot state for the cells after it (slot 0)", attach: true},
		{name: "no shared store: a plain boot",
			edit: func(sp *start.Spec) { sp.Shared = nil }, how: start.Cold, why: "cold: no saved state for this key yet"},
		{name: "--cold: neither store is used",
			prepare: func(t *testing.T, f *fixture) { f.run(t, f.spec("c1"), true) },
			edit:    func(sp *start.Spec) { sp.Cold = true }, how: start.Cold, why: "cold: --cold"},
		{name: "a warm state of the key is restored, with the drift check it passed",
			prepare: func(t *testing.T, f *fixture) { f.run(t, f.spec("c1"), true) }, how: start.Warm, why: "warm: restored the state saved",
			after: func(t *testing.T, f *fixture, st *start.Started) {
				var rec []map[string]string
				if err := json.Unmarshal(st.Verified, &rec); err != nil || len(rec) != 1 || rec[0]["component"] != "cri-o" {
					t.Errorf("the restored state's record is %q", st.Verified)
				}
			}},
		{name: "another cell of the shape restores the post-boot state",
			prepare: func(t *testing.T, f *fixture) { f.run(t, f.spec("c1"), true) },
			edit:    func(sp *start.Spec) { sp.Guest.Cell = "c2" }, how: start.PostBoot, why: "post-boot: no saved state for this key yet", attach: true},
		// The warm state was saved from slot 0's guest, under its name: a
		// run that holds it has slot 0 too.
		{name: "a warm state held by another run is left to it",
			prepare: func(t *testing.T, f *fixture) {
				st := f.run(t, f.spec("c1"), true)
				s, _ := f.warm.Lookup(st.WarmKey)
				release, ok, err := f.shared.Hold(s.Domain)
				if !ok || err != nil {
					t.Fatal("hold")
				}
				t.Cleanup(release)
			}, how: start.Cold, why: "the saved state is in use by another run", attach: true,
			after: func(t *testing.T, f *fixture, st *start.Started) {
				if _, ok := f.warm.Lookup(st.WarmKey); !ok {
					t.Error("a warm state in use was removed")
				}
				if !strings.Contains(st.Why, "(slot 1)") {
					t.Errorf("why %q: want slot 1", st.Why)
				}
			}},
		{name: "a warm state that does not restore is removed",
			prepare: func(t *testing.T, f *fixture) {
				st := f.run(t, f.spec("c1"), true)
				s, _ := f.warm.Lookup(st.WarmKey)
				if err := os.WriteFile(s.Save, []byte("garbage"), 0o600); err != nil {
					t.Fatal(err)
				}
			}, how: start.PostBoot, why: "the saved state did not restore", attach: true,
			after: func(t *testing.T, f *fixture, st *start.Started) {
				if _, ok := f.warm.Lookup(st.WarmKey); ok {
					t.Error("a warm state that did not restore is still there")
				}
			}},
		{name: "a bit-flipped saved memory image is caught before the restore and removed",
			prepare: func(t *testing.T, f *fixture) {
				st := f.run(t, f.spec("c1"), true)
				s, _ := f.warm.Lookup(st.WarmKey)
				b, _ := os.ReadFile(s.Save)
				b[len(b)/2] ^= 1
				_ = os.WriteFile(s.Save, b, 0o600)
			}, how: start.PostBoot, why: "is corrupt: expected sha256:", attach: true,
			after: func(t *testing.T, f *fixture, st *start.Started) {
				if _, ok := f.warm.Lookup(st.WarmKey); ok {
					t.Error("the corrupt warm state is still there")
				}
			}},
		{name: "a restore that never came back leaves the state alone",
			prepare: func(t *testing.T, f *fixture) {
				f.run(t, f.spec("c1"), true)
				f.drv.Fail["RestoreDomain"] = &vm.UnsettledError{What: "restore domain", Limit: time.Minute}
			}, how: start.Cold, why: "did not restore in time", attach: true,
			after: func(t *testing.T, f *fixture, st *start.Started) {
				if _, ok := f.warm.Lookup(st.WarmKey); !ok {
					t.Error("a state libvirtd may still be reading was removed")
				}
			}},
		{name: "a restored guest that never answers is given up on before --boot-timeout",
			prepare: func(t *testing.T, f *fixture) {
				f.run(t, f.spec("c1"), true)
				f.drv.RestorePaused = true
			},
			edit: func(sp *start.Spec) { sp.VM.BootTimeout = 2 * time.Second; sp.Shared = nil },
			how:  start.Cold, why: "within 2s (--boot-timeout); the domain was still paused"},
		{name: "a post-boot state that does not restore is removed and saved anew",
			prepare: func(t *testing.T, f *fixture) {
				f.run(t, f.spec("c1"), false)
				states, _ := f.shared.List()
				for _, s := range states {
					_ = os.WriteFile(s.Save, []byte("garbage"), 0o600)
				}
			}, how: start.Cold, why: "saved a post-boot state for the cells after it (slot 0)", attach: true},
		{name: "a dead run's domain under the slot's name is reaped, then restored",
			prepare: func(t *testing.T, f *fixture) {
				f.run(t, f.spec("c1"), false)
				key := f.spec("c1").Guest.PostBootKey()
				f.drv.AddDomain(vm.DomainSpec{Name: warm.SlotDomain(key, 0), Metadata: vm.OwnerOf(f.vm.Store).Stamp(vm.Metadata{ID: "dead-run"}, f.vm.URI)}, vm.DomainRunning)
			},
			edit: func(sp *start.Spec) { sp.Guest.Cell = "c2" }, how: start.PostBoot, why: "slot 0", attach: true,
			after: func(t *testing.T, f *fixture, st *start.Started) {
				if !strings.Contains(strings.Join(st.Notes, " "), "taken by a run that died") {
					t.Errorf("notes %v", st.Notes)
				}
			}},
		{name: "another state directory's domain has the slot's name: the next slot",
			prepare: func(t *testing.T, f *fixture) {
				f.run(t, f.spec("c1"), false)
				key := f.spec("c1").Guest.PostBootKey()
				other := vm.Owner{Host: vm.HostID(), StateDir: "/elsewhere"}
				f.drv.AddDomain(vm.DomainSpec{Name: warm.SlotDomain(key, 0), Metadata: other.Stamp(vm.Metadata{ID: "someone-else"}, f.vm.URI)}, vm.DomainRunning)
			},
			edit: func(sp *start.Spec) { sp.Guest.Cell = "c2" }, how: start.Cold, why: "saved a post-boot state for the cells after it (slot 1)", attach: true,
			after: func(t *testing.T, f *fixture, st *start.Started) {
				key := f.spec("c1").Guest.PostBootKey()
				if !slices.Contains(f.drv.DomainNames(), warm.SlotDomain(key, 0)) {
					t.Error("the other directory's domain was removed")
				}
				if states, _ := f.shared.List(); len(states) != 2 {
					t.Errorf("post-boot states %d, want slot 0's (left alone) and slot 1's", len(states))
				}
			}},
		{name: "every slot taken: a plain boot",
			prepare: func(t *testing.T, f *fixture) {
				key := f.spec("c1").Guest.PostBootKey()
				for i := range warm.BootSlots {
					release, ok, err := f.shared.Hold(warm.SlotDomain(key, i))
					if !ok || err != nil {
						t.Fatal("hold")
					}
					t.Cleanup(release)
				}
			}, how: start.Cold, why: "every post-boot state of this image is in use"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			if tt.prepare != nil {
				tt.prepare(t, f)
			}
			sp := f.spec("c1")
			if tt.edit != nil {
				tt.edit(&sp)
			}
			st, err := start.Start(context.Background(), sp)
			if err != nil {
				t.Fatalf("start: %v", err)
			}
			defer st.Release()
			defer func() { _ = st.Machine.Teardown(context.Background()) }()
			if st.How != tt.how || !strings.Contains(st.Why, tt.why) {
				t.Errorf("came up %s (%s), want %s (%s)", st.How, st.Why, tt.how, tt.why)
			}
			_, attached := timing(st, "boot.attach")
			if attached != tt.attach {
				t.Errorf("artifact disk hot-plugged: %v, want %v (timings %v)", attached, tt.attach, st.Timings)
			}
			if st.Env == "" || st.Accel == "" || st.Machine == nil {
				t.Errorf("started %+v", st)
			}
			if tt.after != nil {
				tt.after(t, f, st)
			}
		})
	}
}

func timing(st *start.Started, name string) (time.Duration, bool) {
	for _, t := range st.Timings {
		if t.Name == name {
			return t.Took, true
		}
	}
	return 0, false
}

// A saved state's seal stays true after the saving run's teardown: no
// file of it keeps a second name in the pool, whose removal would change
// its ctime and make the first restore after every save rehash the state.
func TestSavedStatesKeepTheirStamps(t *testing.T) {
	f := newFixture(t)
	st := f.run(t, f.spec("c1"), true)
	w, ok := f.warm.Lookup(st.WarmKey)
	if !ok {
		t.Fatal("no warm state saved")
	}
	dirs := []string{w.Dir}
	for _, p := range w.Needs {
		dirs = append(dirs, filepath.Dir(p))
	}
	if len(dirs) != 2 {
		t.Fatalf("the warm state needs %v, want the post-boot state", w.Needs)
	}
	for _, dir := range dirs {
		b, err := os.ReadFile(filepath.Join(dir, cache.ManifestName))
		if err != nil {
			t.Fatal(err)
		}
		var m cache.Manifest
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		for rel, want := range m {
			fi, err := os.Stat(filepath.Join(dir, rel))
			if err != nil {
				t.Fatal(err)
			}
			if got := cache.StampOf(fi); got != want.Stamp {
				t.Errorf("%s/%s: stamp %+v after the teardown, sealed %+v: the next check rehashes it", filepath.Base(dir), rel, got, want.Stamp)
			}
		}
	}
	for _, v := range f.drv.VolumeNames() {
		t.Errorf("volume %s left after the teardown", v)
	}
}

// A saved guest is bound to the QEMU that saved it and the host CPU it
// saw: after either changes, its state misses (a cold boot that saves
// anew) instead of failing to restore; a hypervisor that cannot say what
// it is gets no saved guests at all.
func TestSavedGuestsAreBoundToTheHost(t *testing.T) {
	tests := []struct {
		name   string
		change func(d *vmtest.Driver)
		how    start.How
		why    string
	}{
		{"the same host", func(*vmtest.Driver) {}, start.Warm, "warm: restored"},
		{"QEMU upgraded", func(d *vmtest.Driver) { d.Host.QEMU = "8.2.2" }, start.Cold, "cold: no saved state for this key yet"},
		{"another CPU model", func(d *vmtest.Driver) { d.Host.CPU = "AMD EPYC-Milan" }, start.Cold, "cold: no saved state for this key yet"},
		{"no identity", func(d *vmtest.Driver) { d.Fail["Identity"] = errors.New("host capabilities name no CPU") }, start.Cold,
			"cold: saved guests are off: the hypervisor could not be identified (host capabilities name no CPU)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			f.drv.Host = vm.HostIdentity{QEMU: "7.2.11", CPU: "Intel Skylake-Client-IBRS"}
			f.run(t, f.spec("c1"), true)
			tt.change(f.drv)
			st := f.run(t, f.spec("c1"), false)
			if st.How != tt.how || !strings.HasPrefix(st.Why, tt.why) {
				t.Errorf("%s: %q, want %s: %q", st.How, st.Why, tt.how, tt.why)
			}
		})
	}
}
