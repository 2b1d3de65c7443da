package main

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/provision/env"
	"github.com/envctl/envctl/provision/vm"
)

func newStatusCmd(a *app) *cobra.Command {
	var f vmFlags
	cmd := &cobra.Command{
		Use:     "status [ENV]",
		Aliases: []string{"ps", "ls"},
		Short:   "List environments with state, age, SSH port and profile; with ENV, one in full",
		Example: `  envctl status
  envctl status crio-1-34-runc-f412a7 -o json`,
		Args:              cobra.MaximumNArgs(1),
		ValidArgsFunction: completeEnvs(a),
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) == 1 {
				return a.statusOne(cmd, &f, args[0])
			}
			list, err := vm.List(cmd.Context(), a.vmOptions(&f))
			if err != nil {
				return err
			}
			if list == nil {
				list = []vm.Status{}
			}
			return a.emit(list, func(w io.Writer) { vm.WriteStatus(w, list) })
		},
	}
	f.register(cmd, false)
	return cmd
}

// envDetail is one environment in full: its status row, its record and
// where its files and collected logs are.
type envDetail struct {
	vm.Status
	Cell    string   `json:"cell,omitempty"`
	URI     string   `json:"uri"`
	Kept    bool     `json:"kept"`
	Dir     string   `json:"dir"`
	Console string   `json:"console"`
	Key     string   `json:"key"`
	HostKey string   `json:"host_key"`
	Results []string `json:"results"`
}

func (a *app) statusOne(cmd *cobra.Command, f *vmFlags, id string) error {
	st := a.store()
	e, err := st.Load(id)
	if err != nil {
		return err
	}
	list, err := vm.List(cmd.Context(), a.vmOptions(f))
	if err != nil {
		return err
	}
	d := envDetail{Status: vm.Status{ID: e.ID}, Cell: e.Cell, URI: e.URI, Kept: e.Kept, Dir: e.Dir, Console: e.ConsoleLog(),
		Key: e.KeyPath(), HostKey: strings.TrimSpace(e.HostKey), Results: resultsOf(st, e.ID)}
	for _, s := range list {
		if s.ID == e.ID {
			d.Status = s
		}
	}
	return a.emit(d, func(w io.Writer) {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, row := range [][2]string{
			{"id", d.ID}, {"profile", d.Profile}, {"cell", d.Cell}, {"state", string(d.State)}, {"domain", string(d.Domain)},
			{"busy", fmt.Sprint(d.Busy)}, {"kept", fmt.Sprint(d.Kept)}, {"created", d.Created.Format("2006-01-02 15:04:05 MST") + " (" + d.Age + " ago)"},
			{"accel", d.Accel}, {"host", d.Host}, {"ssh", d.SSH}, {"host key", d.HostKey}, {"key", d.Key},
			{"directory", d.Dir}, {"console", d.Console}, {"collected logs", strings.Join(d.Results, ", ")}, {"note", d.Note},
		} {
			if row[1] != "" {
				fmt.Fprintf(tw, "%s:\t%s\n", row[0], row[1])
			}
		}
		_ = tw.Flush()
		fmt.Fprintf(w, "\n`envctl ssh %s` to log in, `envctl logs %s` for its logs, `envctl ssh-config %s` for OpenSSH, `envctl down %s` to remove it\n", d.ID, d.ID, d.ID, d.ID)
	})
}

// resultsOf lists the directories of collected logs of an environment.
func resultsOf(st env.Store, id string) []string {
	dirs, _ := filepath.Glob(filepath.Join(st.ResultsDir(), id+"-*"))
	if dirs == nil {
		dirs = []string{}
	}
	return dirs
}

func completeEnvs(a *app) func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
	return func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		envs, _ := a.store().List()
		ids := make([]string, len(envs))
		for i, e := range envs {
			ids[i] = e.ID
		}
		return ids, cobra.ShellCompDirectiveNoFileComp
	}
}
