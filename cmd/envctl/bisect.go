package main

import (
	"context"
	"slices"
	"strings"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/catalog"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/bisect"
	"github.com/envctl/envctl/provision/pin"
)

type bisectFlags struct {
	run       runFlags
	good, bad string
	axis      string
	order     []string
	trust     bool
}

func newBisectCmd(a *app) *cobra.Command {
	var f bisectFlags
	cmd := &cobra.Command{
		Use:   "bisect PROFILE --good SPEC --bad SPEC",
		Short: "Find the version step that broke the test, with real runs",
		Long: `bisect builds the ordered path from a good stack to a bad one, each step
moving one component to its next version (catalog versions its source
serves, in version order; --order sets which component moves first), and
binary-searches it with real runs: a pass is good, a failed test bad, and a
run that could not test is skipped. A cell that ran in the last day with
the same lock hash is not run again.

A SPEC pins components: cri-o=1.34.0,cri-tools=1.37.0,runtime=runc@1.3.6;
the profile gives every other one. --axis cri-tools --good 1.37.0 --bad
1.30.0 is short for one component.

Exit status: 0 when the culprit was found, 2 when the ends are wrong
(good fails, bad passes), 3 when runs that could not test hide it.`,
		Args:              exactlyOneProfile,
		ValidArgsFunction: a.completeProfiles,
		RunE:              func(cmd *cobra.Command, args []string) error { return a.bisect(cmd, &f, args[0], nil) },
	}
	f.register(cmd)
	run := &cobra.Command{
		Use:   "run PROFILE --axis COMPONENT --good V --bad V -- CMD [ARG...]",
		Short: "Bisect with any command as the probe, as `git bisect run` does",
		Long: `bisect run searches like bisect, but each probe boots the stack, installs
and verifies it, then runs CMD on this machine while the environment is up:
ENVCTL_ENV names it (so ` + "`envctl ssh $ENVCTL_ENV -- ...`" + ` works) and ENVCTL_SPEC
gives the versions. CMD's exit status decides: 0 good, 125 skip, 1-127 bad,
128 and above abort.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if cmd.ArgsLenAtDash() != 1 || len(args) < 2 {
				return fault.Inputf("bisect run needs PROFILE, then -- and the command to run")
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return a.bisect(cmd, &f, args[0], args[1:]) },
	}
	f.register(run)
	cmd.AddCommand(run)
	return cmd
}

func (f *bisectFlags) register(cmd *cobra.Command) {
	f.run.register(cmd)
	cmd.Flags().StringVar(&f.good, "good", "", "the stack that passes: a SPEC, or a version with --axis")
	cmd.Flags().StringVar(&f.bad, "bad", "", "the stack that fails: a SPEC, or a version with --axis")
	cmd.Flags().StringVar(&f.axis, "axis", "", "bisect one component: --good and --bad are then its versions")
	cmd.Flags().StringSliceVar(&f.order, "order", nil, "the order in which components move, e.g. cri-tools,cri-o")
	cmd.Flags().BoolVar(&f.trust, "trust-endpoints", false, "do not probe --good and --bad themselves")
}

// specs reads --good and --bad (and --axis).
func (f *bisectFlags) specs() (good, bad bisect.Spec, order []profiles.Role, err error) {
	if f.good == "" || f.bad == "" {
		return nil, nil, nil, fault.Inputf("bisect needs both --good and --bad")
	}
	g, b := f.good, f.bad
	if f.axis != "" {
		g, b = f.axis+"="+g, f.axis+"="+b
	}
	if good, err = bisect.ParseSpec(g); err == nil {
		bad, err = bisect.ParseSpec(b)
	}
	for _, o := range f.order {
		r, rerr := profiles.ParseRole(o)
		if rerr != nil {
			return nil, nil, nil, fault.Inputf("--order: %v", rerr)
		}
		order = append(order, r)
	}
	return good, bad, order, err
}

func (a *app) bisect(cmd *cobra.Command, f *bisectFlags, profile string, command []string) error {
	p, err := a.profiles().Load(profile)
	if err != nil {
		return err
	}
	if f.run.test != "" {
		p.Test = f.run.test // probes are locked afresh from this profile
	}
	good, bad, order, err := f.specs()
	if err != nil {
		return err
	}
	opts, err := a.runOptions(cmd.Context(), &f.run)
	if err != nil {
		return err
	}
	if err := opts.Validate(p.Test); err != nil {
		return err
	}
	ctx, stop := a.signalContext(cmd)
	defer stop()
	cat := catalog.Default()
	versions := func(role profiles.Role, name string) ([]string, error) {
		comp, err := cat.Get(name)
		if err != nil {
			return nil, fault.AsInput(err)
		}
		spec := p.Components[role]
		if role == profiles.RoleRuntime && spec.Name != name {
			spec = profiles.ComponentSpec{Name: name}
		}
		src := p.EffectiveSource(role, spec)
		a.step("asking which %s versions source %s serves", name, src)
		return pin.Available(ctx, comp, src, between(comp.Sorted(), good, bad, role)), nil
	}
	path, err := bisect.Path(good, bad, order, versions)
	if err != nil {
		return err
	}
	src := a.imageSources(f.run.imageStore)
	img, err := a.bisectImage(ctx, p, src)
	if err != nil {
		return err
	}
	opts.Image = &img
	locker, err := a.locker(f.run.allowMoved, func(context.Context, string) (lock.Image, error) { return img.Image, nil })
	if err != nil {
		return err
	}
	a.step("bisecting %d steps from %s to %s", len(path)-1, path[0], path[len(path)-1])
	r := &bisect.Runner{Base: p, Lock: locker, Run: opts, Ledger: opts.Ledger, Command: command, Note: a.step}
	res := r.Bisect(ctx, path, f.trust)
	if err := a.emit(res, res.WriteTable); err != nil {
		return err
	}
	switch {
	case res.Found:
		return nil
	case res.EndsWrong:
		return &shown{class: fault.Input}
	}
	return &shown{class: fault.Infra}
}

// between keeps the versions from the lower to the higher end of the
// role's values in good and bad.
func between(sorted []string, good, bad bisect.Spec, role profiles.Role) []string {
	lo, hi := versionOf(role, good[role]), versionOf(role, bad[role])
	if catalog.Compare(lo, hi) > 0 {
		lo, hi = hi, lo
	}
	return slices.DeleteFunc(slices.Clone(sorted), func(v string) bool {
		return catalog.Compare(v, lo) < 0 || catalog.Compare(v, hi) > 0
	})
}

func versionOf(role profiles.Role, v string) string {
	if _, ver, ok := strings.Cut(v, "@"); ok && role == profiles.RoleRuntime {
		return ver
	}
	return v
}

// bisectImage is the image every probe boots: the one the profile's lock
// pins, got as `up` gets it (cache, image store, a build that reproduces
// it; re-pinned, with --locked refused, when none can), else this
// machine's current build of the profile's image. Probes are locked
// afresh, each with this image.
func (a *app) bisectImage(ctx context.Context, p *profiles.Profile, src images.Sources) (images.Obtained, error) {
	st, err := a.images()
	if err != nil {
		return images.Obtained{}, err
	}
	f, err := lock.ForProfile(p, a.arch())
	if err != nil {
		img, err := st.ResolveOrBuild(ctx, p.Image, src)
		if err != nil {
			return images.Obtained{}, err
		}
		return st.Obtain(ctx, img, src)
	}
	ob, err := st.Obtain(ctx, f.Image, src)
	if err == nil && ob.Repin != nil {
		a.step("the lock's image %s %s cannot be had here (%s): the probes use this machine's build %s (%d packages moved: %s)",
			ob.Name, ob.Repin.Was, strings.Join(ob.Repin.Tried, "; "), ob.Digest, len(ob.Repin.Moved), images.MovedList(ob.Repin.Moved, 8))
	}
	return ob, err
}
