package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/viper"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles"
)

// profiles is the profile loader with this machine's settings, read once
// here (the profiles package reads no environment): profiles are looked
// up in $ENVCTL_PROFILES_DIR (a list; profiles_dir in the config), then
// ./profiles, then $XDG_CONFIG_HOME/envctl/profiles; ENVCTL_<KEY>
// variables override profile keys (ENVCTL_VM_MEMORY=4GiB,
// ENVCTL_COMPONENTS_CRI_TOOLS_VERSION=1.34.0).
func (a *app) profiles() profiles.Loader {
	l := profiles.Loader{Overrides: profileOverrides(), Builtin: profiles.Builtin()}
	add := func(dir string, origin profiles.Origin) {
		l.Dirs, l.DirOrigins = append(l.Dirs, dir), append(l.DirOrigins, origin)
	}
	var extra []string
	if d := a.configString("profiles-dir"); d != "" {
		extra = filepath.SplitList(d)
	} else if d := os.Getenv("ENVCTL_PROFILES_DIR"); d != "" {
		extra = filepath.SplitList(d) // before configure ran (completion)
	}
	for _, d := range extra {
		add(d, "profiles_dir")
	}
	add("profiles", "./profiles")
	if cfg, err := os.UserConfigDir(); err == nil {
		l.AdoptDir = filepath.Join(cfg, "envctl", "profiles")
		add(l.AdoptDir, "config dir")
	}
	// Built-in profiles are unpacked into the cache to be read (a copy
	// per binary, never edited).
	dir := a.cacheDir
	if dir == "" {
		dir, _ = cache.DefaultDir()
	}
	if dir != "" {
		l.BuiltinDir = filepath.Join(dir, "profiles")
	}
	return l
}

// profileOverrides reads the ENVCTL_<KEY> variables that override
// profile keys, through viper.
func profileOverrides() profiles.Overrides {
	v := viper.New()
	v.SetEnvPrefix("ENVCTL")
	v.SetEnvKeyReplacer(strings.NewReplacer(".", "_", "-", "_"))
	out := profiles.Overrides{}
	for _, key := range profiles.OverrideKeys() {
		_ = v.BindEnv(key)
		if v.IsSet(key) {
			out[key] = profiles.Override{Value: v.GetString(key), From: envName(key)}
		}
	}
	return out
}

// envName is the variable that overrides a profile key.
func envName(key string) string {
	return "ENVCTL_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(key))
}

// writeProfileList prints the profiles found, with their state.
func writeProfileList(w io.Writer, l profiles.Loader, list []profiles.Entry) {
	if len(list) == 0 {
		fmt.Fprintf(w, "no profiles found in %s\n", strings.Join(l.Dirs, ", "))
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tORIGIN\tPATH\tSTATUS")
	for _, e := range list {
		status := "ok"
		if e.Err != "" {
			status = "invalid: " + e.Err
		} else if e.Locked {
			status = "ok, locked"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Name, e.Origin, e.Path, status)
	}
	_ = tw.Flush()
}

// writeResolved prints a profile and its resolved cells.
func writeResolved(w io.Writer, p *profiles.Profile, cells []profiles.ResolvedCell) {
	fmt.Fprintf(w, "profile %s (%s)\n", p.Name, p.Path)
	if p.Description != "" {
		fmt.Fprintf(w, "  %s\n", p.Description)
	}
	fmt.Fprintf(w, "image %s, vm %d cpus %s memory %s disk, test %s\n\n", p.Image, p.VM.CPUs, p.VM.Memory, p.VM.Disk, p.Test)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CELL\tROLE\tCOMPONENT\tSPEC\tVERSION\tSOURCE")
	for _, c := range cells {
		for _, r := range c.Components {
			v := r.Version
			if r.Label != "" {
				v = r.Label
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.Name, r.Role, r.Name, r.Spec, v, r.Source)
		}
	}
	_ = tw.Flush()
}
