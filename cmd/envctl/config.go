package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
)

// configure reads envctl's configuration: $XDG_CONFIG_HOME/envctl/config.yaml
// and ENVCTL_<FLAG> variables give defaults to any flag of the command
// line that was not set.
func (a *app) configure(cmd *cobra.Command) error {
	v := viper.New()
	v.SetEnvPrefix("ENVCTL")
	v.SetEnvKeyReplacer(strings.NewReplacer("-", "_"))
	v.AutomaticEnv()
	if dir, err := os.UserConfigDir(); err == nil {
		path := filepath.Join(dir, "envctl", "config.yaml")
		if _, err := os.Stat(path); err == nil {
			v.SetConfigFile(path)
			if err := v.ReadInConfig(); err != nil {
				return fault.Inputf("config %s: %v; fix or remove it", path, err)
			}
			if err := checkConfigKeys(path, v, cmd.Root()); err != nil {
				return err
			}
		}
	}
	a.config = v
	var errs []error
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		key := configKey(v, f)
		if f.Changed || key == "" {
			return
		}
		val := v.GetString(key)
		if sl, ok := v.Get(key).([]any); ok {
			parts := make([]string, len(sl))
			for i, x := range sl {
				parts[i] = fmt.Sprint(x)
			}
			val = strings.Join(parts, ",")
		}
		if err := f.Value.Set(val); err != nil {
			errs = append(errs, fault.Inputf("--%s from the configuration (ENVCTL_%s or config.yaml): %v", f.Name, strings.ToUpper(strings.ReplaceAll(key, "-", "_")), err))
		}
	})
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	a.chooseConnection(cmd)
	return a.defaultDirs()
}

// configOnlyKeys are the configuration keys that no flag carries.
var configOnlyKeys = []string{"profiles-dir", "debian-mirror", "debian-snapshot-url"}

// checkConfigKeys refuses a config.yaml key that no command knows (a
// typo such as acel: or image_stor: would otherwise be ignored in
// silence), naming the key and the closest known one.
func checkConfigKeys(path string, v *viper.Viper, root *cobra.Command) error {
	known := map[string]bool{}
	var names []string
	add := func(k string) {
		if !known[k] {
			known[k], known[strings.ReplaceAll(k, "-", "_")] = true, true
			names = append(names, k)
		}
	}
	for _, k := range configOnlyKeys {
		add(k)
	}
	eachCommand(root, func(c *cobra.Command) {
		visit := func(f *pflag.Flag) {
			add(f.Name)
			if k := f.Annotations[configAnnotation]; len(k) == 1 {
				add(k[0])
			}
		}
		c.LocalFlags().VisitAll(visit)
		c.PersistentFlags().VisitAll(visit)
	})
	var unknown []string
	for _, k := range v.AllKeys() {
		top, _, _ := strings.Cut(k, ".")
		if !known[top] && !strings.HasPrefix(top, "envctl_") && !slices.Contains(unknown, top) && v.InConfig(top) {
			unknown = append(unknown, top)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	slices.Sort(unknown)
	hint := ""
	if s := profiles.Suggest(unknown[0], names); s != "" {
		hint = fmt.Sprintf(" (did you mean %q?)", s)
	}
	return fault.Inputf("config %s: unknown key %q%s; the keys are the flags' names (envctl COMMAND --help lists them), profiles-dir, debian-mirror and debian-snapshot-url", path, unknown[0], hint)
}

// configAnnotation names, on a flag, the configuration key that gives its
// default when that is not the flag's own name (`image build --mirror`
// reads ENVCTL_DEBIAN_MIRROR, not ENVCTL_MIRROR, the components' mirror).
const configAnnotation = "envctl-config-key"

// configKey is the configuration key that is set for a flag, if any: the
// flag's name (or its annotated key), as ENVCTL_NAME, `name:` or
// `na_me:` in config.yaml.
func configKey(v *viper.Viper, f *pflag.Flag) string {
	name := f.Name
	if k := f.Annotations[configAnnotation]; len(k) == 1 {
		name = k[0]
	}
	for _, key := range []string{name, strings.ReplaceAll(name, "-", "_")} {
		if v.IsSet(key) {
			return key
		}
	}
	return ""
}

// configString is a configuration value that no flag carries.
func (a *app) configString(key string) string {
	if a.config == nil {
		return ""
	}
	for _, k := range []string{key, strings.ReplaceAll(key, "-", "_")} {
		if a.config.IsSet(k) {
			return a.config.GetString(k)
		}
	}
	return ""
}
