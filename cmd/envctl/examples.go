package main

import (
	"strings"

	"github.com/spf13/cobra"
)

// examples are the --help examples of the commands that do not carry
// their own, by command path below envctl.
var examples = map[string]string{
	"bisect": `  envctl bisect crio-1.34-runc --axis cri-tools --good 1.37.0 --bad 1.30.0
  envctl bisect crio-1.34-runc --good 'cri-tools=1.34.0' --bad 'cri-tools=1.30.0'`,
	"bisect run":   `  envctl bisect run crio-1.34-runc --axis cri-tools --good 1.37.0 --bad 1.30.0 -- ./probe.sh`,
	"cache gc":     `  envctl cache gc`,
	"cache ls":     `  envctl cache ls -o json | jq '.[] | select(.kind == "warm")'`,
	"cache verify": `  envctl cache verify`,
	"catalog": `  envctl catalog
  envctl catalog cri-tools`,
	"diff": `  envctl diff crio-1.34-runc seed-crictl-1.30
  envctl diff ci-host.lock profiles/crio-1.34-runc.lock --exit-code`,
	"down": `  envctl down crio-1-34-runc-f412a7`,
	"fetch": `  envctl fetch crio-1.34-runc
  envctl fetch crictl-matrix --locked
  envctl fetch crictl-matrix --locked --skip-image   # beside an image pull or build`,
	"gc": `  envctl gc`,
	"image build": `  envctl image build debian-12
  envctl image build debian-12 --snapshot 20261205T033328Z
  envctl image build debian-12 --if-needed`,
	"image export": `  envctl image export images.tar crio-1.34-runc crictl-matrix`,
	"image import": `  envctl image import images.tar`,
	"image ls":     `  envctl image ls`,
	"image prune":  `  envctl image prune`,
	"image pull": `  envctl image pull crio-1.34-runc --image-store ghcr.io/org/envctl-images
  envctl image pull debian-12`,
	"image push": `  envctl image push ghcr.io/org/envctl-images crio-1.34-runc`,
	"image rm":   `  envctl image rm debian-13`,
	"lock": `  envctl lock crio-1.34-runc
  envctl lock ./profiles/my-stack.yaml --allow-moved-tags`,
	"plan": `  envctl plan seed-crictl-1.30
  envctl plan crio-1.34-runc --test both`,
	"profiles": `  envctl profiles
  envctl profiles -o json`,
	"show": `  envctl show crictl-matrix
  envctl show crio-1.34-runc -o yaml`,
	"ssh": `  envctl ssh crio-1-34-runc-f412a7
  envctl ssh crio-1-34-runc-f412a7 -- crictl version
  envctl ssh crio-1-34-runc-f412a7 -- 'journalctl -u crio | tail'`,
	"verify":  `  envctl verify crio-1-34-runc-f412a7`,
	"version": `  envctl version -o json`,
}

// addExamples gives every command without an example its entry of
// examples.
func addExamples(root *cobra.Command) {
	eachCommand(root, func(c *cobra.Command) {
		if c != root && c.Example == "" {
			c.Example = examples[strings.TrimPrefix(c.CommandPath(), root.Name()+" ")]
		}
	})
}
