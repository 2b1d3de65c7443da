package env

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"

	"github.com/envctl/envctl/provision/fault"
)

// Env is one environment's record.
type Env struct {
	ID      string    `json:"id"`
	Profile string    `json:"profile"`
	Cell    string    `json:"cell,omitempty"`
	Domain  string    `json:"domain"`
	URI     string    `json:"uri"`
	Pool    string    `json:"pool"`
	Volumes []string  `json:"volumes"`
	SSHHost string    `json:"ssh_host"`
	SSHPort int       `json:"ssh_port"`
	User    string    `json:"user"`
	HostKey string    `json:"host_key"` // authorized_keys form
	Accel   string    `json:"accel"`
	PID     int       `json:"pid"`
	Created time.Time `json:"created"`
	State   string    `json:"state"` // creating, booting, ready, kept, tearing-down
	Kept    bool      `json:"kept"`
	Dir     string    `json:"dir"`
}

// StateDir is $ENVCTL_STATE_DIR, else $XDG_STATE_HOME/envctl, else ~/.local/state/envctl.
func StateDir() string {
	if d := os.Getenv("ENVCTL_STATE_DIR"); d != "" {
		return d
	}
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "envctl")
	}
	if home, err := os.UserHomeDir(); err == nil {
		return filepath.Join(home, ".local", "state", "envctl")
	}
	return filepath.Join(os.TempDir(), "envctl-state")
}

// EnvsDir holds one directory per environment.
func EnvsDir() string { return filepath.Join(StateDir(), "envs") }

// PoolDir is the libvirt storage pool's directory.
func PoolDir() string { return filepath.Join(StateDir(), "pool") }

// New creates a fresh environment directory with a unique ID derived from the profile name.
func New(profile string) (*Env, error) {
	if err := os.MkdirAll(EnvsDir(), 0o755); err != nil {
		return nil, fault.Infraf("state directory %s: %w; set ENVCTL_STATE_DIR", EnvsDir(), err)
	}
	base := sanitize(profile)
	if len(base) > 40 {
		base = base[:40]
	}
	for i := 0; i < 10; i++ {
		b := make([]byte, 3)
		rand.Read(b)
		id := base + "-" + hex.EncodeToString(b)
		dir := filepath.Join(EnvsDir(), id)
		if err := os.Mkdir(dir, 0o700); err != nil {
			if os.IsExist(err) {
				continue
			}
			return nil, fault.Infraf("environment directory %s: %w", dir, err)
		}
		return &Env{ID: id, Profile: profile, Domain: "envctl-" + id, Dir: dir, PID: os.Getpid(), Created: time.Now().UTC(), State: "creating", User: "root", SSHHost: "127.0.0.1"}, nil
	}
	return nil, fault.Infraf("could not allocate an environment ID under %s", EnvsDir())
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(s) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-':
			b.WriteRune(r)
		default:
			b.WriteRune('-')
		}
	}
	return strings.Trim(b.String(), "-")
}

// Path returns a file inside the environment directory.
func (e *Env) Path(name string) string { return filepath.Join(e.Dir, name) }

// ConsoleLog is the serial console's log file.
func (e *Env) ConsoleLog() string { return e.Path("console.log") }

// KeyPath is the user's private key.
func (e *Env) KeyPath() string { return e.Path("id_ed25519") }

// Save writes env.json atomically.
func (e *Env) Save() error {
	b, _ := json.MarshalIndent(e, "", "  ")
	tmp := e.Path("env.json.tmp")
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		return fault.Infraf("save environment %s: %w", e.ID, err)
	}
	return os.Rename(tmp, e.Path("env.json"))
}

// Lock serialises operations on one environment.
func (e *Env) Lock(ctx context.Context) (func(), error) {
	fl := flock.New(e.Path("lock"))
	ok, err := fl.TryLockContext(ctx, 100*time.Millisecond)
	if err != nil || !ok {
		return nil, fault.Infraf("environment %s is busy (another envctl holds %s): %v", e.ID, e.Path("lock"), err)
	}
	return func() { fl.Unlock() }, nil
}

// Load reads an environment by ID (a unique prefix is enough).
func Load(id string) (*Env, error) {
	all, err := List()
	if err != nil {
		return nil, err
	}
	var match []*Env
	for _, e := range all {
		if e.ID == id {
			return e, nil
		}
		if strings.HasPrefix(e.ID, id) {
			match = append(match, e)
		}
	}
	switch len(match) {
	case 1:
		return match[0], nil
	case 0:
		return nil, fault.Inputf("no environment %q; `envctl status` lists them", id)
	}
	var ids []string
	for _, e := range match {
		ids = append(ids, e.ID)
	}
	return nil, fault.Inputf("environment %q is ambiguous: %s", id, strings.Join(ids, ", "))
}

// List reads every environment record, oldest first. Directories without a
// readable record are returned with only ID and Dir set.
func List() ([]*Env, error) {
	entries, err := os.ReadDir(EnvsDir())
	if os.IsNotExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fault.Infraf("read %s: %w", EnvsDir(), err)
	}
	var out []*Env
	for _, ent := range entries {
		if !ent.IsDir() {
			continue
		}
		dir := filepath.Join(EnvsDir(), ent.Name())
		e := &Env{ID: ent.Name(), Dir: dir, Domain: "envctl-" + ent.Name()}
		if b, err := os.ReadFile(filepath.Join(dir, "env.json")); err == nil {
			_ = json.Unmarshal(b, e)
			e.Dir = dir
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Created.Before(out[j].Created) })
	return out, nil
}

// Remove deletes the environment directory.
func (e *Env) Remove() error {
	if err := os.RemoveAll(e.Dir); err != nil {
		return fault.Infraf("remove %s: %w", e.Dir, err)
	}
	return nil
}

// OwnerAlive reports whether the envctl process that created the environment still runs.
func (e *Env) OwnerAlive() bool { return ProcessAlive(e.PID) }

// ProcessAlive reports whether pid is a live envctl process (guarding against PID reuse).
func ProcessAlive(pid int) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && err != syscall.EPERM {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return true // not Linux /proc: trust kill(0)
	}
	exe := strings.SplitN(string(cmdline), "\x00", 2)[0]
	return strings.Contains(filepath.Base(exe), "envctl") || strings.HasSuffix(exe, ".test")
}

// Age is how long ago the environment was created.
func (e *Env) Age() time.Duration { return time.Since(e.Created).Truncate(time.Second) }
