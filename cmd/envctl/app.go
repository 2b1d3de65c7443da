package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artifacts"
	"github.com/envctl/envctl/provision/cellrun"
	"github.com/envctl/envctl/provision/env"
	"github.com/envctl/envctl/provision/libvirt"
	"github.com/envctl/envctl/provision/pin"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

// Commit is the source commit, set at build time (-X main.Commit=...)
// where the toolchain does not stamp it (a build with -buildvcs=false).
var Commit string

// CommitDate is the commit's time, set at build time with Commit.
var CommitDate string

// format is the output format of results on stdout.
type format string

func (f format) String() string { return string(f) }

func (f *format) Set(s string) error {
	switch format(s) {
	case "table", "json", "yaml":
		*f = format(s)
		return nil
	}
	return fmt.Errorf("%q is not an output format: use table, json or yaml", s)
}

func (f *format) Type() string { return "table|json|yaml" }

// app holds what every command shares: the output streams, the global
// flags and the configuration.
type app struct {
	stdout, stderr io.Writer
	log            *slog.Logger
	output         format
	verbose        bool
	quiet          bool
	// terminal and stillEvery replace, in tests, the check that stderr is
	// a terminal and the period of "still running" lines.
	terminal   func() bool
	stillEvery time.Duration
	cacheDir   string
	stateDir   string
	// started is set once a command's own code runs; errors before that
	// are cobra's usage errors.
	started bool
	config  *viper.Viper
}

func newApp(stdout, stderr io.Writer) *app {
	return &app{stdout: stdout, stderr: stderr, output: "table", log: slog.New(slog.DiscardHandler)}
}

// chooseConnection gives --connect, when neither the command line nor the
// configuration set it, libvirt's choice for this user, and says which and
// why: on stderr for a normal user (the choice depends on who they are and
// what the host lets them use), in the log for root (always the system
// daemon).
func (a *app) chooseConnection(cmd *cobra.Command) {
	f := cmd.Flags().Lookup("connect")
	if f == nil {
		return
	}
	sv, ok := f.Value.(pflag.SliceValue)
	if !ok || len(sv.GetSlice()) > 0 {
		return
	}
	uri, why := libvirt.ChooseURI(cmd.Context())
	_ = sv.Replace([]string{uri})
	if os.Geteuid() == 0 && os.Getenv("LIBVIRT_DEFAULT_URI") == "" {
		a.log.Info("libvirt connection", "uri", uri, "why", why)
		return
	}
	if !a.quiet {
		fmt.Fprintf(a.stderr, "envctl: using %s: %s\n", uri, why)
	}
}

// emit prints v as JSON or YAML when asked, else calls table.
func (a *app) emit(v any, table func(w io.Writer)) error {
	switch a.output {
	case "json":
		b, err := jsonOutput(v)
		if err != nil {
			return err
		}
		_, err = a.stdout.Write(b)
		return err
	case "yaml":
		enc := yaml.NewEncoder(a.stdout)
		enc.SetIndent(2)
		return enc.Encode(v)
	}
	table(a.stdout)
	return nil
}

// jsonSchema is the version of the shape of envctl's JSON outputs
// (docs/json.md): it grows when a field changes meaning or goes away.
const jsonSchema = 1

// jsonOutput is v as envctl prints JSON: indented; ~> and <none> as they
// are (read by people and jq, never embedded in HTML); an empty list as
// [], never null; and every object with "schema_version" first.
func jsonOutput(v any) ([]byte, error) {
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
		v = []any{}
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return nil, err
	}
	raw := bytes.TrimSpace(buf.Bytes())
	if len(raw) > 0 && raw[0] == '{' {
		var top map[string]json.RawMessage
		if err := json.Unmarshal(raw, &top); err == nil {
			if _, ok := top["schema_version"]; !ok {
				sep := ","
				if len(top) == 0 {
					sep = ""
				}
				raw = append([]byte(fmt.Sprintf(`{"schema_version":%d%s`, jsonSchema, sep)), raw[1:]...)
			}
		}
	}
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		return nil, err
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}

// step prints a progress line for humans on stderr.
func (a *app) step(format string, args ...any) {
	if a.quiet {
		return
	}
	fmt.Fprintf(a.stderr, "==> "+format+"\n", args...)
}

func (a *app) arch() string { return runtime.GOARCH }

func (a *app) cache() (*cache.Cache, error) {
	c, err := cache.New(a.cacheDir)
	if err != nil {
		return nil, err
	}
	c.Log = a.log
	if a.output == "table" {
		if f, ok := a.stderr.(*os.File); ok {
			c.Progress = cache.ProgressFor(f)
		}
	}
	return c, nil
}

// ledger holds the verdicts of the last day by cell lock hash.
func (a *app) ledger() *cellrun.Ledger {
	return &cellrun.Ledger{Path: filepath.Join(a.store().Dir, "verdicts.json"), MaxAge: 24 * time.Hour}
}

func (a *app) store() env.Store { return env.Store{Dir: a.stateDir} }

// defaultDirs fills in the cache and state directories the flags and the
// configuration left unset.
func (a *app) defaultDirs() error {
	var err error
	if a.cacheDir == "" {
		if a.cacheDir, err = cache.DefaultDir(); err != nil {
			return err
		}
	}
	if a.stateDir == "" {
		a.stateDir, err = env.DefaultDir()
	}
	return err
}

func (a *app) images() (*images.Store, error) {
	c, err := a.cache()
	if err != nil {
		return nil, err
	}
	return images.NewStore(c), nil
}

func (a *app) fetcher() (*artifacts.Fetcher, error) {
	c, err := a.cache()
	if err != nil {
		return nil, err
	}
	f := &artifacts.Fetcher{Cache: c, Catalog: catalog.Default(), Log: a.log, Step: a.step, Task: a.task}
	if a.verbose {
		f.Output = a.stderr
	}
	return f, nil
}

// locker pins profiles and records their binaries' digests: what
// `envctl lock` and lock-on-first-use run. allowMovedTags accepts module
// snapshots whose tag moved upstream (--allow-moved-tags); image gives
// the image a new lock pins.
func (a *app) locker(allowMovedTags bool, image func(context.Context, string) (lock.Image, error)) (cellrun.Locker, error) {
	st, err := a.images()
	if err != nil {
		return nil, err
	}
	f, err := a.fetcher()
	if err != nil {
		return nil, err
	}
	r := pin.New(st, a.arch())
	r.AllowMovedTags = allowMovedTags
	r.Image = image
	return cellrun.LockWith(r.Lock, f), nil
}

// newImage resolves the image a new lock pins: the current local build
// (built first when there is none), or the catalog's download.
func (a *app) newImage(src images.Sources) func(context.Context, string) (lock.Image, error) {
	return func(ctx context.Context, name string) (lock.Image, error) {
		st, err := a.images()
		if err != nil {
			return lock.Image{}, err
		}
		return st.ResolveOrBuild(ctx, name, src)
	}
}

// imageSources are where a locked image may come from besides the cache:
// the image store (--image-store, image_store in the config,
// ENVCTL_IMAGE_STORE), and for a rebuild the Debian mirror
// (debian_mirror, ENVCTL_DEBIAN_MIRROR) and snapshot archive
// (debian_snapshot_url, ENVCTL_DEBIAN_SNAPSHOT_URL).
func (a *app) imageSources(store string) images.Sources {
	return images.Sources{Store: store, Mirror: a.configString("debian-mirror"), SnapshotBase: a.configString("debian-snapshot-url"),
		Log: a.stderr, Step: a.step, Task: a.task}
}
