package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles/base/fault"
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
	cacheDir       string
	stateDir       string
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
	fmt.Fprintf(a.stderr, "envctl: using %s: %s\n", uri, why)
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "envctl",
		Short: "Pinned, throwaway VMs for container-runtime testing",
		Long: `envctl boots a throwaway libvirt/QEMU VM from a pinned image, installs
exactly the locked versions of CRI-O, cri-tools, runc or crun, conmon and the
CNI plugins, proves that the guest runs them, runs the OCI image-volume
lifecycle test and tears everything down.

Exit codes: 0 ok, 1 test failed (or not tested: every test skipped), 2 bad input or usage, 3 infrastructure error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			a.started = true
			level := slog.LevelWarn
			if a.verbose {
				level = slog.LevelDebug
			}
			a.log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
			slog.SetDefault(a.log)
			return a.configure(cmd)
		},
	}
	pf := root.PersistentFlags()
	pf.VarP(&a.output, "output", "o", "output format: table, json or yaml")
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "log diagnostics to stderr")
	pf.StringVar(&a.cacheDir, "cache-dir", "", "cache directory (default $XDG_CACHE_HOME/envctl)")
	pf.StringVar(&a.stateDir, "state-dir", "", "state directory for environments (default $XDG_STATE_HOME/envctl)")
	_ = root.RegisterFlagCompletionFunc("output", fixedCompletion("table", "json", "yaml"))
	root.Version = versionLine()
	root.SetVersionTemplate("envctl {{.Version}}\n")
	root.AddGroup(
		&cobra.Group{ID: "run", Title: "Run a stack:"},
		&cobra.Group{ID: "pin", Title: "Profiles and locks:"},
		&cobra.Group{ID: "env", Title: "Environments (kept VMs):"},
		&cobra.Group{ID: "store", Title: "Images and cache:"},
	)
	groups := map[string]string{
		"up": "run", "matrix": "run", "bisect": "run", "plan": "run", "fetch": "run",
		"profiles": "pin", "show": "pin", "init": "pin", "lock": "pin", "diff": "pin", "catalog": "pin",
		"status": "env", "ssh": "env", "ssh-config": "env", "cp": "env", "logs": "env", "down": "env", "gc": "env", "verify": "env",
		"image": "store", "cache": "store",
	}
	root.AddCommand(
		newVersionCmd(a),
		newProfilesCmd(a),
		newShowCmd(a),
		newInitCmd(a),
		newLockCmd(a),
		newDiffCmd(a),
		newCatalogCmd(a),
		newPlanCmd(a),
		newFetchCmd(a),
		newUpCmd(a),
		newMatrixCmd(a),
		newBisectCmd(a),
		newStatusCmd(a),
		newSSHCmd(a),
		newSSHConfigCmd(a),
		newCpCmd(a),
		newLogsCmd(a),
		newDownCmd(a),
		newGCCmd(a),
		newVerifyCmd(a),
		newImageCmd(a),
		newCacheCmd(a),
	)
	for _, c := range root.Commands() {
		c.GroupID = groups[c.Name()]
	}
	plainFlagHelp(root)
	a.registerCompletions(root)
	return root
}

// plainFlagHelp turns backticks in flag help into quotes: pflag reads a
// backticked word as the flag's value name, so a boolean flag whose help
// names a command (`envctl ssh ENV`) would look as if it took one.
func plainFlagHelp(c *cobra.Command) {
	fix := func(f *pflag.Flag) { f.Usage = strings.ReplaceAll(f.Usage, "`", "'") }
	c.LocalFlags().VisitAll(fix)
	c.PersistentFlags().VisitAll(fix)
	for _, sub := range c.Commands() {
		plainFlagHelp(sub)
	}
}

// emit prints v as JSON or YAML when asked, else calls table.
func (a *app) emit(v any, table func(w io.Writer)) error {
	switch a.output {
	case "json":
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		// ~> and <none> stay as they are: this is read by people and jq,
		// never embedded in HTML.
		enc.SetEscapeHTML(false)
		if rv := reflect.ValueOf(v); rv.Kind() == reflect.Slice && rv.IsNil() {
			v = []any{} // an empty list is [], never null
		}
		return enc.Encode(v)
	case "yaml":
		enc := yaml.NewEncoder(a.stdout)
		enc.SetIndent(2)
		return enc.Encode(v)
	}
	table(a.stdout)
	return nil
}

// step prints a progress line for humans on stderr.
func (a *app) step(format string, args ...any) {
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
	f := &artifacts.Fetcher{Cache: c, Catalog: catalog.Default(), Log: a.log, Step: a.step}
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
		Log: a.stderr, Step: a.step}
}

func fixedCompletion(vals ...string) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return vals, cobra.ShellCompDirectiveNoFileComp
	}
}

func (a *app) completeProfiles(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	var names []string
	for _, e := range a.profiles().List() {
		names = append(names, e.Name)
	}
	return names, cobra.ShellCompDirectiveNoFileComp
}

func exactlyOneProfile(cmd *cobra.Command, args []string) error {
	if len(args) != 1 {
		return fault.Inputf("%s needs exactly one PROFILE (a name from `envctl profiles` or a path to a YAML file), got %d arguments", cmd.CommandPath(), len(args))
	}
	return nil
}
