package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
	"go.yaml.in/yaml/v3"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/provision/fault"
)

// Version is set at build time with -ldflags "-X main.Version=...".
var Version = "dev"

// app holds what every command shares.
type app struct {
	output   string
	verbose  bool
	cacheDir string
	stdout   io.Writer
	stderr   io.Writer
	log      *slog.Logger
}

func (a *app) cache() (*cache.Cache, error) {
	dir := a.cacheDir
	if dir == "" {
		dir = cache.DefaultDir()
	}
	c, err := cache.New(dir)
	if err != nil {
		return nil, err
	}
	c.Log = a.log
	if a.output == "table" || a.output == "" {
		c.Progress = cache.ProgressFor(os.Stderr)
	}
	return c, nil
}

func (a *app) catalog() *catalog.Catalog { return catalog.Default() }

func (a *app) images() *images.Catalog { return images.DefaultCatalog() }

func (a *app) arch() string { return runtime.GOARCH }

// emit prints v as JSON or YAML when asked, else calls table.
func (a *app) emit(v any, table func(w io.Writer)) error {
	switch a.output {
	case "json":
		enc := json.NewEncoder(a.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case "yaml":
		enc := yaml.NewEncoder(a.stdout)
		enc.SetIndent(2)
		return enc.Encode(v)
	case "table", "":
		table(a.stdout)
		return nil
	}
	return fault.Inputf("--output %q: use table, json or yaml", a.output)
}

func newRootCmd() *cobra.Command {
	a := &app{stdout: os.Stdout, stderr: os.Stderr}
	root := &cobra.Command{
		Use:   "envctl",
		Short: "Pinned, throwaway VMs for container-runtime testing",
		Long: `envctl boots a throwaway libvirt/QEMU VM from a checksum-pinned image,
installs exactly the locked versions of CRI-O, cri-tools and runc or crun,
checks the installed versions against the lock, runs the OCI image-volume
lifecycle test and tears everything down.

Exit codes: 0 ok, 1 test failed, 2 bad input or usage, 3 infrastructure error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, args []string) error {
			level := slog.LevelWarn
			if a.verbose {
				level = slog.LevelDebug
			}
			a.log = slog.New(slog.NewTextHandler(a.stderr, &slog.HandlerOptions{Level: level}))
			slog.SetDefault(a.log)
			switch a.output {
			case "table", "json", "yaml", "":
			default:
				return fault.Inputf("--output %q: use table, json or yaml", a.output)
			}
			return nil
		},
	}
	root.PersistentFlags().StringVarP(&a.output, "output", "o", "table", "output format: table, json or yaml")
	root.PersistentFlags().BoolVarP(&a.verbose, "verbose", "v", false, "log diagnostics to stderr")
	root.PersistentFlags().StringVar(&a.cacheDir, "cache-dir", "", "cache directory (default $ENVCTL_CACHE_DIR or $XDG_CACHE_HOME/envctl)")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return fault.Inputf("%v (see `%s --help`)", err, c.CommandPath())
	})
	_ = root.RegisterFlagCompletionFunc("output", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{"table", "json", "yaml"}, cobra.ShellCompDirectiveNoFileComp
	})

	root.AddCommand(
		newVersionCmd(a),
		newProfilesCmd(a),
		newShowCmd(a),
		newLockCmd(a),
		newCatalogCmd(a),
		newPlanCmd(a),
	)
	for _, add := range extraCommands {
		root.AddCommand(add(a))
	}
	return root
}

// extraCommands lets other files register commands.
var extraCommands []func(*app) *cobra.Command

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print envctl's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := struct {
				Version string `json:"version"`
				Go      string `json:"go"`
				OS      string `json:"os"`
				Arch    string `json:"arch"`
				Commit  string `json:"commit,omitempty"`
			}{Version, runtime.Version(), runtime.GOOS, runtime.GOARCH, ""}
			if bi, ok := debug.ReadBuildInfo(); ok {
				for _, s := range bi.Settings {
					if s.Key == "vcs.revision" {
						v.Commit = s.Value
					}
				}
			}
			return a.emit(v, func(w io.Writer) {
				fmt.Fprintf(w, "envctl %s (%s, %s/%s)\n", v.Version, v.Go, v.OS, v.Arch)
			})
		},
	}
}
