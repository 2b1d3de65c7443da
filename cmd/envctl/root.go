package main

import (
	"log/slog"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/envctl/envctl/profiles/base/fault"
)

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
	pf.BoolVarP(&a.verbose, "verbose", "v", false, "log diagnostics to stderr, and stream the output of builds")
	pf.BoolVarP(&a.quiet, "quiet", "q", false, "print only the verdict and errors (a failed build's output included)")
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
	addExamples(root)
	eachCommand(root, a.registerCompletions)
	return root
}

// eachCommand calls fn for c and every command below it.
func eachCommand(c *cobra.Command, fn func(*cobra.Command)) {
	fn(c)
	for _, sub := range c.Commands() {
		eachCommand(sub, fn)
	}
}

// plainFlagHelp turns backticks in flag help into quotes: pflag reads a
// backticked word as the flag's value name, so a boolean flag whose help
// names a command (`envctl ssh ENV`) would look as if it took one.
func plainFlagHelp(root *cobra.Command) {
	fix := func(f *pflag.Flag) { f.Usage = strings.ReplaceAll(f.Usage, "`", "'") }
	eachCommand(root, func(c *cobra.Command) {
		c.LocalFlags().VisitAll(fix)
		c.PersistentFlags().VisitAll(fix)
	})
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
