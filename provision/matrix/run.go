package matrix

import (
	"cmp"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/cellrun"
	"github.com/envctl/envctl/provision/report"
	"github.com/envctl/envctl/provision/vm"
)

// Options say how a matrix runs.
type Options struct {
	// Run is the pipeline's options for every cell; each cell's VM.URI is
	// set to the host it runs on.
	Run cellrun.Options
	// Hosts are libvirt URIs; none means Run.VM.URI.
	Hosts []string
	// Jobs bounds the cells running at once; 0 means what the hosts'
	// free CPUs and memory hold for the cells' VM shape.
	Jobs int
	// FailFast starts no more cells after the first that does not pass;
	// the ones running finish.
	FailFast bool
	// Done is called with each cell's report as it finishes.
	Done func(*report.Report)
	Log  *slog.Logger
}

// HostUse is what one host did.
type HostUse struct {
	URI   string `json:"uri"`
	Slots int    `json:"slots"`
	Cells int    `json:"cells"`
	// Failed says why the host stopped taking cells, if it did.
	Failed string `json:"failed,omitempty"`
}

// Result is a matrix run.
type Result struct {
	Reports []*report.Report `json:"reports"`
	// NotRun lists cells that never started (--fail-fast, Ctrl-C).
	NotRun []string  `json:"not_run,omitempty"`
	Jobs   int       `json:"jobs"`
	Hosts  []HostUse `json:"hosts"`
	// Prefetched counts the distinct artifacts fetched or built up front.
	Prefetched int     `json:"prefetched"`
	Seconds    float64 `json:"seconds"`
}

type host struct {
	HostUse
	busy int
	dead bool
}

// Run runs the cells and returns every finished cell's report, in the
// order of cells.
func Run(ctx context.Context, cells []lock.LockedCell, o Options) Result {
	start := time.Now()
	if len(cells) == 0 {
		return Result{}
	}
	log := cmp.Or(o.Log, slog.Default())
	uris := o.Hosts
	if len(uris) == 0 {
		uris = []string{o.Run.VM.URI}
	}
	res := Result{}
	var hosts []*host
	vmShape := cells[0].VM
	for _, uri := range uris {
		h := &host{HostUse: HostUse{URI: uri}}
		if cp, err := capacity(ctx, o.Run, uri); err != nil {
			h.dead, h.Failed = true, oneLine(err.Error())
			log.Warn("host unreachable; its cells go elsewhere", "host", uri, "err", err)
		} else {
			h.Slots = cp.Slots(vmShape.CPUs, uint64(vmShape.Memory))
		}
		hosts = append(hosts, h)
	}
	slots := 0
	for _, h := range hosts {
		slots += h.Slots
	}
	res.Jobs = o.Jobs
	if res.Jobs <= 0 {
		res.Jobs = slots
	} else if res.Jobs > slots && slots > 0 {
		// An explicit -j beyond what the hosts seem to hold wins: their
		// slots grow in proportion.
		for _, h := range hosts {
			h.Slots = (h.Slots*res.Jobs + slots - 1) / slots
		}
	}
	res.Jobs = max(1, min(res.Jobs, len(cells)))
	if o.Run.Stop != cellrun.AfterBoot {
		res.Prefetched = prefetch(ctx, cells, o.Run.Fetch, log)
	}

	reports := make([]*report.Report, len(cells))
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	running, stopped := 0, false
	var wg sync.WaitGroup
	for i, c := range cells {
		mu.Lock()
		var h *host
		for ctx.Err() == nil && !stopped {
			h = pick(hosts)
			if running < res.Jobs && h != nil {
				break
			}
			if h == nil && !anyAlive(hosts) {
				break
			}
			cond.Wait()
		}
		if ctx.Err() != nil || stopped {
			mu.Unlock()
			res.NotRun = append(res.NotRun, c.Name)
			continue
		}
		if h == nil { // every host failed: the rest could not be tested
			mu.Unlock()
			reports[i] = cellrun.ErrorReport(c, fault.Infraf("no host can run it: %s", deadReasons(hosts)))
			if o.Done != nil {
				o.Done(reports[i])
			}
			continue
		}
		h.busy++
		h.Cells++
		running++
		mu.Unlock()
		wg.Add(1)
		go func(i int, c lock.LockedCell, h *host) {
			defer wg.Done()
			opts := o.Run
			opts.VM.URI = h.URI
			if opts.ResultsDir != "" {
				opts.ResultsDir = filepath.Join(opts.ResultsDir, sanitize(c.Name))
			}
			rep, err := cellrun.Run(ctx, c, opts)
			reachable := err == nil || !fault.Is(err, fault.Infra) || ctx.Err() != nil || healthy(ctx, o.Run, h.URI)
			mu.Lock()
			reports[i] = rep
			h.busy--
			running--
			if !reachable && !h.dead {
				h.dead, h.Failed = true, oneLine(err.Error())
				log.Warn("host failed; its remaining cells go elsewhere", "host", h.URI, "err", err)
			}
			if o.FailFast && rep.Verdict != report.VerdictPass && rep.Verdict != report.VerdictReady {
				stopped = true
			}
			cond.Broadcast()
			mu.Unlock()
			if o.Done != nil {
				o.Done(rep)
			}
		}(i, c, h)
	}
	wg.Wait()
	for _, r := range reports {
		if r != nil {
			res.Reports = append(res.Reports, r)
		}
	}
	for _, h := range hosts {
		res.Hosts = append(res.Hosts, h.HostUse)
	}
	res.Seconds = time.Since(start).Round(100 * time.Millisecond).Seconds()
	return res
}

// pick is the live host with the most free slots (ties: the first given).
func pick(hosts []*host) *host {
	var best *host
	for _, h := range hosts {
		if h.dead || h.busy >= h.Slots {
			continue
		}
		if best == nil || h.Slots-h.busy > best.Slots-best.busy {
			best = h
		}
	}
	return best
}

func anyAlive(hosts []*host) bool {
	for _, h := range hosts {
		if !h.dead {
			return true
		}
	}
	return false
}

func deadReasons(hosts []*host) string {
	var s []string
	for _, h := range hosts {
		s = append(s, h.URI+": "+h.Failed)
	}
	return strings.Join(s, "; ")
}

func capacity(ctx context.Context, o cellrun.Options, uri string) (vm.Capacity, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	d, err := o.VM.Connect(ctx, uri)
	if err != nil {
		return vm.Capacity{}, err
	}
	defer d.Close()
	return d.Capacity(ctx)
}

// healthy asks a host whether it still answers.
func healthy(ctx context.Context, o cellrun.Options, uri string) bool {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	d, err := o.VM.Connect(ctx, uri)
	if err != nil {
		return false
	}
	defer d.Close()
	_, err = d.Domains(ctx)
	return err == nil
}

// prefetch fetches or builds every distinct artifact of the cells once,
// before any VM boots, so that cells that share one never build it twice.
// A failure is left to the cells that need the artifact to report.
func prefetch(ctx context.Context, cells []lock.LockedCell, f cellrun.Fetcher, log *slog.Logger) int {
	seen := map[string]bool{}
	for _, c := range cells {
		for _, p := range c.Components {
			if seen[p.Key()] {
				continue
			}
			seen[p.Key()] = true
			if _, err := f.Fetch(ctx, c, p); err != nil {
				log.Warn("prefetch", "artifact", p.Key(), "err", err)
			}
		}
	}
	return len(seen)
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '/' || r == ' ' || r == ',' || r == '=' || r == '@' {
			return '_'
		}
		return r
	}, s)
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }
