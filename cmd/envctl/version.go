package main

import (
	"cmp"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"

	"github.com/spf13/cobra"
)

func newVersionCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print envctl's version",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			v := buildVersion()
			return a.emit(v, func(w io.Writer) { fmt.Fprintf(w, "envctl %s\n", versionLine()) })
		},
	}
}

// versionInfo is what this binary is: its version (the release, or the
// module version `go install` recorded), the commit it was built from and
// whether the tree had changes, and the toolchain.
type versionInfo struct {
	SchemaVersion int    `json:"schema_version"`
	Version       string `json:"version"`
	Commit        string `json:"commit,omitempty"`
	Modified      bool   `json:"modified,omitempty"`
	Date          string `json:"date,omitempty"` // the commit time
	Go            string `json:"go"`
	OS            string `json:"os"`
	Arch          string `json:"arch"`
}

func buildVersion() versionInfo {
	v := versionInfo{SchemaVersion: 1, Version: Version, Commit: Commit, Date: CommitDate, Go: runtime.Version(), OS: runtime.GOOS, Arch: runtime.GOARCH}
	if bi, ok := debug.ReadBuildInfo(); ok {
		if v.Version == "dev" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			v.Version = bi.Main.Version
		}
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				v.Commit = cmp.Or(v.Commit, s.Value)
			case "vcs.modified":
				v.Modified = s.Value == "true"
			case "vcs.time":
				v.Date = cmp.Or(v.Date, s.Value)
			}
		}
	}
	return v
}

// versionLine is `envctl --version`'s line: version, commit, toolchain.
func versionLine() string {
	v := buildVersion()
	commit := "commit unknown"
	if v.Commit != "" {
		commit = "commit " + v.Commit[:min(12, len(v.Commit))]
		if v.Modified {
			commit += ", modified"
		}
		if v.Date != "" {
			commit += ", " + v.Date
		}
	}
	return fmt.Sprintf("%s (%s, %s, %s/%s)", v.Version, commit, v.Go, v.OS, v.Arch)
}
