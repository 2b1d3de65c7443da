package scripts

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestArchitectureNamesEveryPackage: docs/architecture.md's package map
// names every package of the module, each in its own table row.
func TestArchitectureNamesEveryPackage(t *testing.T) {
	doc, err := os.ReadFile("../docs/architecture.md")
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}", "github.com/envctl/envctl/...").Output()
	if err != nil {
		t.Skipf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		rel := strings.TrimPrefix(strings.TrimPrefix(pkg, "github.com/envctl/envctl"), "/")
		row := "| `" + rel + "` |"
		if !strings.Contains(string(doc), row) && !strings.Contains(string(doc), "| **"+rel+"** |") {
			t.Errorf("docs/architecture.md has no row for %s", rel)
		}
	}
}
