package vm

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/provision/env"
	"github.com/envctl/envctl/provision/guest"
)

// Attach connects to a kept environment over SSH, holding its lock shared
// (other sessions may attach too). An environment that a run, down or gc
// holds is refused at once.
func Attach(ctx context.Context, opts Options, id string) (*Machine, error) {
	e, err := opts.Store.Load(id)
	if err != nil {
		return nil, err
	}
	if e.Corrupt != "" {
		return nil, fault.Infraf("environment %s: %s; `envctl down %s` removes it", e.ID, e.Corrupt, e.ID)
	}
	m := &Machine{Env: e, opts: opts}
	// Shared: sessions on a kept environment go side by side; down and gc
	// take it alone.
	if m.unlock, err = e.Share(); err != nil {
		return nil, err
	}
	if IsRemote(e.URI) {
		// Its SSH port is on the remote host's loopback.
		if m.drv, err = opts.Connect(ctx, e.URI); err != nil {
			m.release()
			return nil, err
		}
	}
	key, err := os.ReadFile(e.KeyPath())
	if err != nil {
		m.release()
		return nil, fault.Infraf("environment %s: key %s: %w", e.ID, e.KeyPath(), err)
	}
	if m.signer, err = ssh.ParsePrivateKey(key); err != nil {
		m.release()
		return nil, fault.Infraf("environment %s: key %s: %w", e.ID, e.KeyPath(), err)
	}
	if m.hostKey, _, _, _, err = ssh.ParseAuthorizedKey([]byte(e.HostKey)); err != nil {
		m.release()
		return nil, fault.Infraf("environment %s: pinned host key: %w", e.ID, err)
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if m.SSH, err = guest.Wait(cctx, m.sshConfig(), opts.log()); err != nil {
		m.release()
		return nil, fault.Infraf("environment %s: %v; `envctl status` shows its state", e.ID, err)
	}
	return m, nil
}

// IsRemote reports whether a libvirt URI names another host.
func IsRemote(uri string) bool {
	u, err := url.Parse(uri)
	return err == nil && (u.Host != "" || strings.Contains(u.Scheme, "+"))
}

// Down tears an environment down by ID. A busy environment is refused at once.
func Down(ctx context.Context, opts Options, id string) error {
	e, err := opts.Store.Load(id)
	if err != nil {
		return err
	}
	unlock, err := e.Lock(ctx, 0)
	if err != nil {
		return err
	}
	defer unlock()
	d, err := opts.Connect(ctx, cmp.Or(e.URI, opts.URI))
	if err != nil {
		return err
	}
	defer d.Close()
	if e.Corrupt != "" {
		// Without a record, the table of volume names says what it owned.
		e.Pool = PoolName(opts.Store, d.Local())
		for _, k := range []env.VolumeKind{env.VolumeDisk, env.VolumeSeed, env.VolumeArtifacts, env.VolumeConsole, env.VolumeDiskTop} {
			e.Volumes = append(e.Volumes, env.VolumeName(e.ID, k))
		}
	}
	return removeEnv(ctx, d, e)
}

// Status is an environment as `envctl status` shows it.
type Status struct {
	ID      string      `json:"id"`
	Profile string      `json:"profile"`
	State   env.State   `json:"state"`
	Domain  DomainState `json:"domain"`
	Busy    bool        `json:"busy"`
	Created time.Time   `json:"created"`
	Age     string      `json:"age"`
	SSH     string      `json:"ssh,omitempty"`
	Accel   string      `json:"accel"`
	Host    string      `json:"host"`
	Note    string      `json:"note,omitempty"`
}

// List reports every environment of the state directory with its domain's
// state. It works without libvirt, reporting the domain state as unknown.
func List(ctx context.Context, opts Options) ([]Status, error) {
	envs, err := opts.Store.List()
	if err != nil {
		return nil, err
	}
	// Each environment's domain state, from the host it runs on.
	states := map[string]map[string]DomainState{}
	for _, e := range envs {
		uri := cmp.Or(e.URI, opts.URI)
		if _, done := states[uri]; done || opts.Connect == nil {
			continue
		}
		states[uri] = nil
		if d, err := opts.Connect(ctx, uri); err == nil {
			if doms, err := d.Domains(ctx); err == nil {
				states[uri] = map[string]DomainState{}
				for _, dom := range doms {
					states[uri][dom.Meta.ID] = dom.State
				}
			}
			_ = d.Close()
		}
	}
	var out []Status
	for _, e := range envs {
		s := Status{ID: e.ID, Profile: e.Profile, State: e.State, Created: e.Created, Age: e.Age().String(), Accel: e.Accel, Domain: DomainOther, Host: cmp.Or(e.URI, opts.URI)}
		host, reached := states[s.Host]
		reached = reached && host != nil
		if reached {
			s.Domain = cmp.Or(host[e.ID], DomainMissing)
		}
		if e.SSHPort > 0 {
			s.SSH = fmt.Sprintf("%s:%d", e.SSHHost, e.SSHPort)
		}
		if unlock, err := e.Lock(ctx, 0); err != nil {
			s.Busy = true
		} else {
			unlock()
		}
		switch {
		case e.Corrupt != "":
			s.Note = "corrupt record (" + e.Corrupt + "): `envctl down " + e.ID + "` removes it"
		case !s.Busy && !e.Kept:
			s.Note = "orphaned: its envctl is gone; " + gcHint(s.Host, opts.URI, reached || opts.Connect == nil) + " removes it"
		case e.Kept && reached && s.Domain == DomainMissing:
			s.Note = "its domain is gone; " + gcHint(s.Host, opts.URI, reached || opts.Connect == nil) + " removes the record"
		}
		out = append(out, s)
	}
	return out, nil
}

// gcHint names the gc command that collects an environment on host: gc
// visits only the hosts it is given.
func gcHint(host, current string, reached bool) string {
	hint := "`envctl gc`"
	if host != current {
		hint = "`envctl gc --connect '" + host + "'`"
	}
	if !reached {
		hint += " (once the host answers)"
	}
	return hint
}

// What gc may remove.
const (
	KindDomain    = "domain"
	KindVolume    = "volume"
	KindDirectory = "directory"
)

// Action is one thing gc removes, and why.
type Action struct {
	Kind  string `json:"kind"` // domain, volume, directory
	Name  string `json:"name"`
	EnvID string `json:"env"`
	Why   string `json:"why"`
}

// Observed is what gc sees: this state directory's environments and which
// of them a live envctl holds, every envctl domain, and the volumes in
// this state directory's pool.
type Observed struct {
	Owner Owner
	Envs  []*env.Env
	Held  map[string]bool // env ID → its lock is held by a live envctl
	// Leased is env ID → the lease a kept environment lives for is held
	// by a live process (env.Env.Lease).
	Leased  map[string]bool
	Domains []Domain
	Volumes []string
}

// PlanGC decides what gc removes. It is a pure function of what it is
// shown, so every rule is unit-tested:
//   - a domain of another owner (state directory) is never touched;
//   - an environment whose lock a live envctl holds is alive;
//   - a kept environment stays while its domain exists, running, paused
//     (QEMU pauses guests when the host disk fills) or shut off, unless
//     it was kept for a lease (a bisect probe) that no process holds;
//   - a corrupt record is reported, never treated as an orphan;
//   - everything else of this owner is an orphan: its domain, its volumes
//     and its directory go.
func PlanGC(o Observed) (actions []Action, notes []string) {
	byID := map[string]*env.Env{}
	for _, e := range o.Envs {
		byID[e.ID] = e
	}
	domOf := map[string]Domain{}
	for _, d := range o.Domains {
		if o.Owner.Owns(d.Meta) {
			domOf[d.Meta.ID] = d
		}
	}
	keep := func(id string) (bool, string) {
		e, ok := byID[id]
		switch {
		case !ok:
			return false, "no environment record"
		case o.Held[id]:
			return true, ""
		case e.Corrupt != "":
			return true, ""
		case e.Kept && e.Lease != "" && !o.Leased[id]:
			return false, "kept for a process (a bisect probe) that is gone"
		case e.Kept:
			if _, exists := domOf[id]; exists {
				return true, ""
			}
			return false, "kept, but its domain no longer exists"
		}
		return false, "its envctl is gone"
	}
	for _, e := range o.Envs {
		if e.Corrupt != "" && !o.Held[e.ID] {
			notes = append(notes, fmt.Sprintf("environment %s has a corrupt record (%s); left alone: `envctl down %s` removes it", e.ID, e.Corrupt, e.ID))
		}
	}
	for _, id := range slices.Sorted(maps.Keys(domOf)) {
		if ok, why := keep(id); !ok {
			actions = append(actions, Action{Kind: KindDomain, Name: domOf[id].Name, EnvID: id, Why: why})
		}
	}
	for _, v := range o.Volumes {
		id, _, ok := env.ParseVolumeName(v)
		if !ok {
			continue
		}
		if keepIt, why := keep(id); !keepIt {
			actions = append(actions, Action{Kind: KindVolume, Name: v, EnvID: id, Why: why})
		}
	}
	for _, e := range o.Envs {
		if keepIt, why := keep(e.ID); !keepIt {
			actions = append(actions, Action{Kind: KindDirectory, Name: e.Dir, EnvID: e.ID, Why: why})
		}
	}
	return actions, notes
}

// GC removes what dead runs of this state directory left behind. It holds
// each environment's lock while it looks and removes, so it never races
// an `up` that is still running.
func GC(ctx context.Context, opts Options) ([]Action, []string, error) {
	d, err := opts.Connect(ctx, opts.URI)
	if err != nil {
		return nil, nil, err
	}
	defer d.Close()
	all, err := opts.Store.List()
	if err != nil {
		return nil, nil, err
	}
	// Only this host's environments: a kept VM on another host must not
	// look like one whose domain is gone.
	var envs []*env.Env
	for _, e := range all {
		if e.URI == "" || e.URI == d.URI() {
			envs = append(envs, e)
		}
	}
	o := Observed{Owner: OwnerOf(opts.Store), Envs: envs, Held: map[string]bool{}, Leased: map[string]bool{}}
	for _, e := range envs {
		if e.Lease != "" {
			o.Leased[e.ID] = env.LeaseHeld(e.Lease)
		}
		unlock, err := e.Lock(ctx, 0)
		if err != nil {
			o.Held[e.ID] = true
			continue
		}
		defer unlock()
	}
	if o.Domains, err = d.Domains(ctx); err != nil {
		return nil, nil, err
	}
	pool := PoolName(opts.Store, d.Local())
	if o.Volumes, err = d.Volumes(ctx, pool); err != nil {
		return nil, nil, err
	}
	actions, notes := PlanGC(o)
	var done []Action
	var errs []error
	unfinished, err := opts.Store.RemoveUnfinished()
	for _, dir := range unfinished {
		done = append(done, Action{Kind: KindDirectory, Name: dir, Why: "never finished: its envctl died while making it"})
	}
	errs = append(errs, err)
	failed := map[string]bool{}
	for _, a := range actions {
		var err error
		switch a.Kind {
		case KindDomain:
			err = d.Remove(ctx, a.Name)
		case KindVolume:
			err = d.DeleteVolume(ctx, pool, a.Name)
		case KindDirectory:
			if failed[a.EnvID] {
				err = fmt.Errorf("kept %s: removing its domain or volumes failed", a.Name)
			} else {
				err = os.RemoveAll(a.Name)
			}
		}
		if err != nil {
			failed[a.EnvID] = true
			errs = append(errs, err)
			continue
		}
		done = append(done, a)
	}
	return done, notes, errors.Join(errs...)
}

// WriteStatus prints `envctl status` for humans.
func WriteStatus(w io.Writer, list []Status) {
	if len(list) == 0 {
		fmt.Fprintln(w, "no environments")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPROFILE\tSTATE\tDOMAIN\tAGE\tSSH\tACCEL\tNOTE")
	for _, s := range list {
		state := string(s.State)
		if s.Busy {
			state += " (busy)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.ID, s.Profile, state, s.Domain, s.Age, s.SSH, s.Accel, s.Note)
	}
	_ = tw.Flush()
}
