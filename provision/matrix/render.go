package matrix

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/provision/report"
)

// failingStep is the first failed step of a report, or "-".
func failingStep(r *report.Report) string {
	for _, s := range r.Steps {
		if s.Status == report.Fail {
			return s.Name
		}
	}
	if r.Verdict == report.VerdictError {
		for i := len(r.Phases) - 1; i >= 0; i-- {
			if p := r.Phases[i].Name; !strings.Contains(p, ".") && p != "teardown" && p != "collect" {
				return "(" + p + ")"
			}
		}
	}
	return "-"
}

// explanation is what a cell's outcome is put down to: its first
// diagnosis, else its error's first line.
func explanation(r *report.Report) string {
	if len(r.Diagnosis) > 0 {
		return r.Diagnosis[0].String()
	}
	if r.Error != "" {
		return report.FirstLine(r.Error)
	}
	return ""
}

// WriteSummary prints one row per cell: versions, verdict, failing step,
// diagnosis, host and duration.
func WriteSummary(w io.Writer, res Result) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CELL\tVERSIONS\tVERDICT\tFAILING STEP\tDIAGNOSIS\tHOST\tTIME")
	for _, r := range res.Reports {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%.0fs\n", r.Cell, r.Versions(), strings.ToUpper(string(r.Verdict)), failingStep(r), cmp.Or(explanation(r), "-"), r.Host, r.Seconds)
	}
	_ = tw.Flush()
	if len(res.NotRun) > 0 {
		fmt.Fprintf(w, "not run (--fail-fast or interrupted): %s\n", strings.Join(res.NotRun, ", "))
	}
	fmt.Fprintf(w, "%d cells in %.0fs, %d at a time on %d host(s); %d distinct artifacts fetched once\n", len(res.Reports), res.Seconds, res.Jobs, len(res.Hosts), res.Prefetched)
}

// Grid is the verdicts as a table: one axis as rows, another as columns,
// for one combination of any further axes (Title).
type Grid struct {
	Title    string            `json:"title,omitempty"`
	Rows     profiles.Role     `json:"rows"`
	Cols     profiles.Role     `json:"columns"`
	RowVals  []string          `json:"row_values"`
	ColVals  []string          `json:"column_values"`
	Cells    map[string]string `json:"cells"` // "row|col" → "PASS", "FAIL [1]"
	Legend   []string          `json:"legend"`
	legendOf map[string]int
}

// Grids lays the reports out as grids, when their cells have two or more
// axes; nil otherwise. Outcomes are PASS, FAIL or ERROR (could not test),
// with a numbered key to the diagnosis in the legend.
func Grids(reports []*report.Report) []*Grid {
	var axes []profiles.Role
	vals := map[string]map[profiles.Role]string{}
	for _, r := range reports {
		v := profiles.ParseCellName(r.Cell)
		vals[r.Cell] = v
		for role := range v {
			if !slices.Contains(axes, role) {
				axes = append(axes, role)
			}
		}
	}
	if len(axes) < 2 {
		return nil
	}
	slices.SortFunc(axes, func(a, b profiles.Role) int { return slices.Index(profiles.Roles, a) - slices.Index(profiles.Roles, b) })
	rows, cols, rest := axes[0], axes[1], axes[2:]
	byTitle := map[string]*Grid{}
	var out []*Grid
	legend := map[string]int{}
	for _, r := range reports {
		v := vals[r.Cell]
		var parts []string
		for _, a := range rest {
			parts = append(parts, string(a)+"="+v[a])
		}
		title := strings.Join(parts, ",")
		g := byTitle[title]
		if g == nil {
			g = &Grid{Title: title, Rows: rows, Cols: cols, Cells: map[string]string{}, legendOf: legend}
			byTitle[title] = g
			out = append(out, g)
		}
		if !slices.Contains(g.RowVals, v[rows]) {
			g.RowVals = append(g.RowVals, v[rows])
		}
		if !slices.Contains(g.ColVals, v[cols]) {
			g.ColVals = append(g.ColVals, v[cols])
		}
		outcome := map[report.Verdict]string{report.VerdictPass: "PASS", report.VerdictReady: "READY", report.VerdictFail: "FAIL", report.VerdictNotTested: "NOT TESTED"}[r.Verdict]
		if outcome == "" {
			outcome = "ERROR"
		}
		if e := explanation(r); e != "" && outcome != "PASS" {
			if _, ok := legend[e]; !ok {
				legend[e] = len(legend) + 1
			}
			outcome += fmt.Sprintf(" [%d]", legend[e])
		}
		g.Cells[v[rows]+"|"+v[cols]] = outcome
	}
	keys := slices.SortedFunc(maps.Keys(legend), func(a, b string) int { return legend[a] - legend[b] })
	for _, g := range out {
		for _, k := range keys {
			g.Legend = append(g.Legend, fmt.Sprintf("[%d] %s", legend[k], k))
		}
	}
	return out
}

// WriteGrids prints grids as text tables.
func WriteGrids(w io.Writer, grids []*Grid) {
	for i, g := range grids {
		if g.Title != "" {
			fmt.Fprintf(w, "%s:\n", g.Title)
		}
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "%s \\ %s\t%s\n", g.Rows, g.Cols, strings.Join(g.ColVals, "\t"))
		for _, rv := range g.RowVals {
			row := []string{rv}
			for _, cv := range g.ColVals {
				row = append(row, cmp.Or(g.Cells[rv+"|"+cv], "-"))
			}
			fmt.Fprintln(tw, strings.Join(row, "\t"))
		}
		_ = tw.Flush()
		if i == len(grids)-1 {
			for _, l := range g.Legend {
				fmt.Fprintln(w, l)
			}
		}
	}
}

// WriteGridsMarkdown prints grids as Markdown tables, for
// $GITHUB_STEP_SUMMARY and --summary.
func WriteGridsMarkdown(w io.Writer, profile string, grids []*Grid, res Result) {
	fmt.Fprintf(w, "### envctl matrix %s\n\n", profile)
	for _, g := range grids {
		if g.Title != "" {
			fmt.Fprintf(w, "**%s**\n\n", g.Title)
		}
		fmt.Fprintf(w, "| %s \\ %s | %s |\n|---|%s\n", g.Rows, g.Cols, strings.Join(g.ColVals, " | "), strings.Repeat("---|", len(g.ColVals)))
		for _, rv := range g.RowVals {
			row := []string{rv}
			for _, cv := range g.ColVals {
				row = append(row, cmp.Or(g.Cells[rv+"|"+cv], "-"))
			}
			fmt.Fprintf(w, "| %s |\n", strings.Join(row, " | "))
		}
		fmt.Fprintln(w)
	}
	if len(grids) == 0 {
		fmt.Fprintf(w, "| cell | verdict | diagnosis |\n|---|---|---|\n")
		for _, r := range res.Reports {
			fmt.Fprintf(w, "| %s | %s | %s |\n", r.Cell, strings.ToUpper(string(r.Verdict)), explanation(r))
		}
		fmt.Fprintln(w)
	} else {
		for _, l := range grids[len(grids)-1].Legend {
			fmt.Fprintf(w, "- %s\n", l)
		}
	}
}

// GitHubMatrix is a GitHub Actions strategy.matrix: one include entry per
// cell, with its name (for `envctl up PROFILE --cell NAME`) and its axis
// values (for job names).
func GitHubMatrix(cells []profiles.Cell) ([]byte, error) {
	var include []map[string]string
	for _, c := range cells {
		e := map[string]string{"cell": c.Name}
		for role, v := range c.Values {
			e[string(role)] = v
		}
		include = append(include, e)
	}
	return json.Marshal(map[string]any{"include": include})
}
