package vm_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/envctl/envctl/provision/env"
	"github.com/envctl/envctl/provision/vm"
)

func dom(id string, owner vm.Owner, st vm.DomainState) vm.Domain {
	return vm.Domain{Name: "envctl-" + id, State: st, Meta: owner.Stamp(vm.Metadata{ID: id}, "qemu:///system")}
}

func TestPlanGC(t *testing.T) {
	me := vm.Owner{Host: "h1", StateDir: "/state/me"}
	other := vm.Owner{Host: "h1", StateDir: "/state/other"}
	sameDirOtherMachine := vm.Owner{Host: "h2", StateDir: "/state/me"}
	rec := func(id string, kept bool) *env.Env { return &env.Env{ID: id, Dir: "/state/me/envs/" + id, Kept: kept} }
	leased := func(id string) *env.Env {
		e := rec(id, true)
		e.Lease = "/state/me/leases/" + id + ".lock"
		return e
	}
	corrupt := &env.Env{ID: "bad", Dir: "/state/me/envs/bad", Corrupt: "env.json is not valid JSON"}
	tests := []struct {
		name  string
		obs   vm.Observed
		want  []string // "kind name"
		notes int
	}{
		{"nothing", vm.Observed{Owner: me}, nil, 0},
		{"orphan: owner gone", vm.Observed{Owner: me, Envs: []*env.Env{rec("a", false)}, Domains: []vm.Domain{dom("a", me, vm.DomainRunning)}, Volumes: []string{"a-disk.qcow2", "a-seed.iso"}},
			[]string{"domain envctl-a", "volume a-disk.qcow2", "volume a-seed.iso", "directory /state/me/envs/a"}, 0},
		{"held by a live envctl", vm.Observed{Owner: me, Envs: []*env.Env{rec("a", false)}, Held: map[string]bool{"a": true}, Domains: []vm.Domain{dom("a", me, vm.DomainRunning)}, Volumes: []string{"a-disk.qcow2"}},
			nil, 0},
		{"another state directory's domain", vm.Observed{Owner: me, Domains: []vm.Domain{dom("x", other, vm.DomainRunning)}}, nil, 0},
		{"the same state directory path on another machine", vm.Observed{Owner: me, Domains: []vm.Domain{dom("x", sameDirOtherMachine, vm.DomainRunning)}}, nil, 0},
		{"a domain without a host ID is never ours", vm.Observed{Owner: me, Domains: []vm.Domain{{Name: "envctl-old", State: vm.DomainRunning, Meta: vm.Metadata{ID: "old", Owner: "/state/me"}}}}, nil, 0},
		{"kept and running", vm.Observed{Owner: me, Envs: []*env.Env{rec("k", true)}, Domains: []vm.Domain{dom("k", me, vm.DomainRunning)}, Volumes: []string{"k-disk.qcow2"}}, nil, 0},
		{"kept and paused (host disk full)", vm.Observed{Owner: me, Envs: []*env.Env{rec("k", true)}, Domains: []vm.Domain{dom("k", me, vm.DomainPaused)}, Volumes: []string{"k-disk.qcow2"}}, nil, 0},
		{"kept and shut off", vm.Observed{Owner: me, Envs: []*env.Env{rec("k", true)}, Domains: []vm.Domain{dom("k", me, vm.DomainShutOff)}}, nil, 0},
		{"kept, domain gone", vm.Observed{Owner: me, Envs: []*env.Env{rec("k", true)}, Volumes: []string{"k-disk.qcow2"}},
			[]string{"volume k-disk.qcow2", "directory /state/me/envs/k"}, 0},
		{"domain without record", vm.Observed{Owner: me, Domains: []vm.Domain{dom("z", me, vm.DomainRunning)}, Volumes: []string{"z-seed.iso", "not-ours.img"}},
			[]string{"domain envctl-z", "volume z-seed.iso"}, 0},
		{"bisect probe, its bisect alive", vm.Observed{Owner: me, Envs: []*env.Env{leased("p")}, Leased: map[string]bool{"p": true}, Domains: []vm.Domain{dom("p", me, vm.DomainRunning)}}, nil, 0},
		{"bisect probe, its bisect killed", vm.Observed{Owner: me, Envs: []*env.Env{leased("p")}, Domains: []vm.Domain{dom("p", me, vm.DomainRunning)}, Volumes: []string{"p-disk.qcow2"}},
			[]string{"domain envctl-p", "volume p-disk.qcow2", "directory /state/me/envs/p"}, 0},
		{"corrupt record is reported, not removed", vm.Observed{Owner: me, Envs: []*env.Env{corrupt}, Volumes: []string{"bad-disk.qcow2"}}, nil, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			actions, notes := vm.PlanGC(tt.obs)
			var got []string
			for _, a := range actions {
				got = append(got, a.Kind+" "+a.Name)
				if a.Why == "" {
					t.Errorf("%s %s: no reason", a.Kind, a.Name)
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("actions %v, want %v", got, tt.want)
			}
			if len(notes) != tt.notes {
				t.Errorf("notes %v", notes)
			}
		})
	}
}

// TestGCRemovesOnlyWhatItOwns: a dead run's leftovers go; a kept VM, a
// held environment and another state directory's VM stay.
func TestGCRemovesOnlyWhatItOwns(t *testing.T) {
	d, opts := setup(t)
	d.BootGuests(t, nil)
	ctx := context.Background()

	kept, err := vm.Boot(ctx, opts, keepSpec)
	if err != nil {
		t.Fatal(err)
	}
	keptID := kept.Env.ID
	if err := kept.Keep(); err != nil {
		t.Fatal(err)
	}
	held, err := vm.Boot(ctx, opts, spec) // still held by this "process"
	if err != nil {
		t.Fatal(err)
	}
	// A run with --keep whose envctl died before it could keep the VM:
	// its persistent domain outlives it.
	dead, err := vm.Boot(ctx, opts, keepSpec)
	if err != nil {
		t.Fatal(err)
	}
	deadID := dead.Env.ID
	dead.Release() // the envctl that owned it is gone
	otherOpts := opts
	otherOpts.Store = env.Store{Dir: t.TempDir()}
	foreign, err := vm.Boot(ctx, otherOpts, keepSpec)
	if err != nil {
		t.Fatal(err)
	}
	foreign.Release()

	removed, _, err := vm.GC(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range removed {
		if r.EnvID != deadID {
			t.Errorf("gc removed %s %s of %s", r.Kind, r.Name, r.EnvID)
		}
		got = append(got, r.Kind)
	}
	if strings.Join(got, " ") != "domain volume volume directory" {
		t.Errorf("removed %v", got)
	}
	doms := d.DomainNames()
	for _, want := range []string{kept.Env.Domain, held.Env.Domain, foreign.Env.Domain} {
		if !slices.Contains(doms, want) {
			t.Errorf("gc removed %s", want)
		}
	}
	if _, err := os.Stat(kept.Env.Dir); err != nil {
		t.Error("gc removed the kept environment's record")
	}
	// Once the held run ends, it tears itself down; the kept one stays
	// until `down`.
	if err := held.Teardown(ctx); err != nil {
		t.Fatal(err)
	}
	if err := vm.Down(ctx, opts, keptID); err != nil {
		t.Fatal(err)
	}
	if removed, _, _ := vm.GC(ctx, opts); len(removed) != 0 {
		t.Errorf("second gc removed %v", removed)
	}
	if err := vm.Down(ctx, otherOpts, foreign.Env.ID); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, d, opts)
}

// A bisect probe is kept for its bisect's lease: gc leaves it while the
// bisect lives, and removes it once the bisect is killed (issue 25).
func TestGCReapsProbesOfADeadBisect(t *testing.T) {
	d, opts := setup(t)
	d.BootGuests(t, nil)
	ctx := context.Background()
	lease, unlease, err := opts.Store.TakeLease()
	if err != nil {
		t.Fatal(err)
	}
	probe, err := vm.Boot(ctx, opts, keepSpec)
	if err != nil {
		t.Fatal(err)
	}
	probe.Env.Lease = lease
	if err := probe.Keep(); err != nil {
		t.Fatal(err)
	}
	if removed, _, _ := vm.GC(ctx, opts); len(removed) != 0 {
		t.Fatalf("gc removed a live bisect's probe: %v", removed)
	}
	unlease() // the bisect is killed
	removed, _, err := vm.GC(ctx, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(removed) == 0 || removed[0].Kind != vm.KindDomain || !strings.Contains(removed[0].Why, "bisect") {
		t.Fatalf("gc after the bisect died: %v", removed)
	}
	assertNothingLeft(t, d, opts)
}

func TestDownOfACorruptRecord(t *testing.T) {
	d, opts := setup(t)
	d.BootGuests(t, nil)
	m, err := vm.Boot(context.Background(), opts, spec)
	if err != nil {
		t.Fatal(err)
	}
	m.Release()
	if err := os.WriteFile(m.Env.Path("env.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, notes, _ := vm.GC(context.Background(), opts); len(notes) != 1 || !strings.Contains(notes[0], "corrupt") {
		t.Errorf("notes %v", notes)
	}
	list, _ := vm.List(context.Background(), opts)
	if len(list) != 1 || !strings.Contains(list[0].Note, "corrupt") {
		t.Errorf("status %+v", list)
	}
	if _, err := vm.Attach(context.Background(), opts, m.Env.ID); err == nil {
		t.Error("attached to a corrupt record")
	}
	// The record says nothing, so down removes by the table of volume
	// names; the domain has the default name.
	if err := vm.Down(context.Background(), opts, m.Env.ID); err != nil {
		t.Fatal(err)
	}
	assertNothingLeft(t, d, opts)
}
