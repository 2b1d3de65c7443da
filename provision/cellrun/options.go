package cellrun

import (
	"cmp"
	"context"
	"log/slog"
	"time"

	"github.com/envctl/envctl/images"
	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artifacts"
	"github.com/envctl/envctl/provision/testimages"
	"github.com/envctl/envctl/provision/vm"
	"github.com/envctl/envctl/provision/warm"
)

// Stop says how far a run goes.
type Stop int

// How far a run goes.
const (
	Full         Stop = iota // fetch, boot, install, verify, test
	AfterBoot                // boot only (--no-install)
	AfterInstall             // boot, install and verify (--no-test)
)

// TestImages says where the test's images come from.
type TestImages string

// TestImageSources are the test image sources, for flags and messages.
var TestImageSources = []TestImages{LocalImages, UpstreamImages}

// The test image sources.
const (
	// LocalImages are built in-process and served from host loopback
	// through an SSH remote forward: the guest needs no network.
	LocalImages TestImages = "local"
	// UpstreamImages are upstream's test images (quay.io, registry.k8s.io),
	// pulled by the host and served like the local ones: the guest still
	// has no network and never sees the host's loopback.
	UpstreamImages TestImages = "upstream"
)

// Upload says how a cell's files reach the guest.
type Upload string

// Uploads are the ways files reach the guest, for flags and messages.
var Uploads = []Upload{UploadDisk, UploadSFTP}

// The ways files reach the guest.
const (
	// UploadDisk attaches one read-only artifact disk (a tar, built once
	// per set of files and cached) and unpacks it in the guest.
	UploadDisk Upload = "disk"
	// UploadSFTP copies every file over SSH, checked in the guest.
	UploadSFTP Upload = "sftp"
)

// Fetcher gets a locked component's files onto the host
// (*artifacts.Fetcher).
type Fetcher interface {
	Fetch(ctx context.Context, cell lock.LockedCell, c lock.Part) (artifacts.Files, error)
	FetchTool(ctx context.Context, t lock.Artifact) (artifacts.Files, error)
}

// ImageSource makes a locked image's files present (*images.Store).
type ImageSource interface {
	Ensure(ctx context.Context, ref lock.Image) (images.Files, error)
}

// Event reports a phase starting or ending, for live progress.
type Event struct {
	Cell  string
	Phase string
	Done  bool
	Took  time.Duration
	Err   error
}

// Options are everything a run needs besides the cell.
type Options struct {
	VM     vm.Options
	Fetch  Fetcher
	Images ImageSource
	// Workload is the static binary the local test images run as sleep,
	// cat and pause (testimages.WorkloadBinary).
	Workload   string
	TestImages TestImages
	// SerialCases runs the image-volume test's cases one after another
	// (side by side is the default with the local test images).
	SerialCases bool
	// Upload is how files reach the guest; the artifact disk (the
	// default) needs Cache, where disks are kept.
	Upload Upload
	Cache  *cache.Cache
	// Warm keeps warm starts (nil: none); Boot keeps post-boot states
	// shared by the cells of one image and VM shape (nil: none); Cold
	// never restores either.
	Warm *warm.Store
	Boot *warm.Store
	Cold bool
	Stop Stop
	// Keep leaves the VM running afterwards (unless the run was cancelled).
	Keep bool
	// KeepOnFailure leaves the VM of a failed run (a failed test or an
	// error after the boot) running, and tears a passing one down. The
	// domain outlives the process from the boot on, as with Keep, so
	// saved guests are not used.
	KeepOnFailure bool
	// Lease, with Keep, keeps the VM only for as long as a lock file is
	// held (env.TakeLease): the probe of a bisect that is killed is then
	// an orphan that `envctl gc` removes.
	Lease string
	// ResultsDir receives the logs of a failed run; default: a new
	// directory under the state directory's results/.
	ResultsDir string
	// Progress receives phase events; may be nil.
	Progress func(Event)
	// Timeouts override DefaultTimeouts by phase name.
	Timeouts map[string]time.Duration
	// Deadman is how long a restored guest lives without envctl renewing
	// its dead-man timer (the run's --timeout; 0: DefaultDeadman).
	Deadman time.Duration
	// Ledger records each tested cell's verdict by lock hash; may be nil.
	Ledger *Ledger
	Log    *slog.Logger
	// Step prints a progress line for humans; may be nil.
	Step func(format string, args ...any)
	// Image says where the cell's image came from, for the report
	// (Resolution.Image); may be nil.
	Image *images.Obtained
}

func (o Options) step(format string, args ...any) {
	if o.Step != nil {
		o.Step(format, args...)
	}
}

// Validate checks the options for a profile's test before any work:
// nothing is fetched, built or booted when this fails.
func (o Options) Validate(test profiles.TestName) error {
	if err := o.VM.Validate(); err != nil {
		return err
	}
	if o.Fetch == nil || o.Images == nil {
		return fault.Inputf("cellrun: no artifact or image source configured")
	}
	switch cmp.Or(o.TestImages, LocalImages) {
	case LocalImages:
		if o.Stop == Full && test.Runs() {
			if err := testimages.CheckStatic(o.Workload); err != nil {
				return fault.Infraf("test images: %w", err)
			}
		}
	case UpstreamImages:
		if _, upstream := test.UpstreamFile(); upstream && o.Stop == Full {
			return fault.Inputf("--test-images upstream pulls the images of envctl's own test; upstream's suite (test %s) is served envctl's hermetic images under upstream's names: drop --test-images", test)
		}
	default:
		return fault.Inputf("--test-images %q: use local or upstream", o.TestImages)
	}
	return nil
}
