package matrix

import (
	"cmp"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/envctl/envctl/profiles"
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
	s := &scheduler{o: o, log: cmp.Or(o.Log, slog.Default()), reports: make([]*report.Report, len(cells))}
	s.cond = sync.NewCond(&s.mu)
	s.hosts = openHosts(ctx, o, cells[0].VM, s.log)
	s.res.Jobs = jobs(o.Jobs, s.hosts, len(cells))
	if o.Run.Stop != cellrun.AfterBoot {
		s.res.Prefetched = prefetch(ctx, cells, o.Run.Fetch, s.log)
	}
	for i, c := range cells {
		s.schedule(ctx, i, c)
	}
	s.wg.Wait()
	for _, r := range s.reports {
		if r != nil {
			s.res.Reports = append(s.res.Reports, r)
		}
	}
	for _, h := range s.hosts {
		s.res.Hosts = append(s.res.Hosts, h.HostUse)
	}
	s.res.Seconds = time.Since(start).Round(100 * time.Millisecond).Seconds()
	return s.res
}

// openHosts asks every host what it holds for the cells' VM shape; one
// that does not answer is dead from the start.
func openHosts(ctx context.Context, o Options, shape profiles.VM, log *slog.Logger) []*host {
	uris := o.Hosts
	if len(uris) == 0 {
		uris = []string{o.Run.VM.URI}
	}
	var hosts []*host
	for _, uri := range uris {
		h := &host{HostUse: HostUse{URI: uri}}
		if cp, err := capacity(ctx, o.Run, uri); err != nil {
			h.dead, h.Failed = true, oneLine(err.Error())
			log.Warn("host unreachable; its cells go elsewhere", "host", uri, "err", err)
		} else {
			h.Slots = cp.Slots(shape.CPUs, uint64(shape.Memory))
		}
		hosts = append(hosts, h)
	}
	return hosts
}

// jobs is how many cells run at once: -j, else what the hosts hold. An
// explicit -j beyond what the hosts seem to hold wins: their slots grow
// in proportion.
func jobs(asked int, hosts []*host, cells int) int {
	slots := 0
	for _, h := range hosts {
		slots += h.Slots
	}
	n := asked
	if n <= 0 {
		n = slots
	} else if n > slots && slots > 0 {
		for _, h := range hosts {
			h.Slots = (h.Slots*n + slots - 1) / slots
		}
	}
	return max(1, min(n, cells))
}

// scheduler runs cells on hosts, at most res.Jobs at once.
type scheduler struct {
	o       Options
	log     *slog.Logger
	hosts   []*host
	res     Result
	reports []*report.Report
	mu      sync.Mutex
	cond    *sync.Cond
	running int
	stopped bool // --fail-fast saw a cell that did not pass
	wg      sync.WaitGroup
}

// schedule waits for a free slot on a live host and starts cell i there;
// a cell that cannot start is recorded as not run, or as could not test
// when every host failed.
func (s *scheduler) schedule(ctx context.Context, i int, c lock.LockedCell) {
	s.mu.Lock()
	var h *host
	for ctx.Err() == nil && !s.stopped {
		h = pick(s.hosts)
		if s.running < s.res.Jobs && h != nil {
			break
		}
		if h == nil && !anyAlive(s.hosts) {
			break
		}
		s.cond.Wait()
	}
	switch {
	case ctx.Err() != nil || s.stopped:
		s.mu.Unlock()
		s.res.NotRun = append(s.res.NotRun, c.Name)
		return
	case h == nil: // every host failed: the rest could not be tested
		s.mu.Unlock()
		s.reports[i] = cellrun.ErrorReport(c, fault.Infraf("no host can run it: %s", deadReasons(s.hosts)))
		if s.o.Done != nil {
			s.o.Done(s.reports[i])
		}
		return
	}
	h.busy++
	h.Cells++
	s.running++
	s.mu.Unlock()
	s.wg.Add(1)
	go s.run(ctx, i, c, h)
}

// run runs one cell on its host and gives the slot back; a host that no
// longer answers after an infrastructure error takes no more cells.
func (s *scheduler) run(ctx context.Context, i int, c lock.LockedCell, h *host) {
	defer s.wg.Done()
	opts := s.o.Run
	opts.VM.URI = h.URI
	if opts.ResultsDir != "" {
		opts.ResultsDir = filepath.Join(opts.ResultsDir, sanitize(c.Name))
	}
	rep, err := cellrun.Run(ctx, c, opts)
	reachable := err == nil || !fault.Is(err, fault.Infra) || ctx.Err() != nil || healthy(ctx, s.o.Run, h.URI)
	s.mu.Lock()
	s.reports[i] = rep
	h.busy--
	s.running--
	if !reachable && !h.dead {
		h.dead, h.Failed = true, oneLine(err.Error())
		s.log.Warn("host failed; its remaining cells go elsewhere", "host", h.URI, "err", err)
	}
	if s.o.FailFast && rep.Verdict != report.VerdictPass && rep.Verdict != report.VerdictReady {
		s.stopped = true
	}
	s.cond.Broadcast()
	s.mu.Unlock()
	if s.o.Done != nil {
		s.o.Done(rep)
	}
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
	cp, err := d.Capacity(ctx)
	if err != nil {
		return cp, err
	}
	// What the cells will run on decides how many fit (Slots).
	cp.Type, _, err = d.DomainType(ctx, o.VM.Accel)
	return cp, err
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
