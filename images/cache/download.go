package cache

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/cavaliergopher/grab/v3"
	"github.com/opencontainers/go-digest"
	"github.com/vbauerster/mpb/v8"
	"github.com/vbauerster/mpb/v8/decor"

	"github.com/envctl/envctl/profiles/base/fault"
)

// Fetch returns the cached path of the file at url whose digest must be
// want, downloading it when absent. Partial downloads resume; a file whose
// digest differs never enters the cache.
func (c *Cache) Fetch(ctx context.Context, url string, want digest.Digest) (string, error) {
	if p, ok := c.Has(want); ok {
		return p, nil
	}
	unlock, err := c.Lock(ctx, want.String())
	if err != nil {
		return "", err
	}
	defer unlock()
	if p, ok := c.Has(want); ok { // another envctl finished it while we waited
		return p, nil
	}
	tmp := filepath.Join(c.Dir, "tmp", want.Algorithm().String()+"-"+want.Encoded()+".part")
	if strings.HasPrefix(url, "file://") {
		if err := copyFile(strings.TrimPrefix(url, "file://"), tmp); err != nil {
			os.Remove(tmp)
			return "", diskError(c.Dir, fault.Infraf("copy %s: %w", url, err))
		}
		return c.commit(tmp, want, url)
	}
	if err := c.download(ctx, url, tmp); err != nil {
		return "", err
	}
	return c.commit(tmp, want, url)
}

// IdleTimeout ends a download that received nothing for this long: a
// server that stalls mid-file must not hang a run.
var IdleTimeout = 60 * time.Second

// errStalled is the cause of a download cancelled for receiving nothing.
var errStalled = errors.New("stalled")

func (c *Cache) download(parent context.Context, url, dst string) error {
	req, err := grab.NewRequest(dst, url)
	if err != nil {
		return fault.Inputf("download %s: %w", url, err)
	}
	ctx, cancel := context.WithCancelCause(parent)
	defer cancel(nil)
	req = req.WithContext(ctx)
	client := grab.NewClient()
	client.UserAgent = "envctl"
	client.HTTPClient = &http.Client{Transport: &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 15 * time.Second}).DialContext,
		TLSHandshakeTimeout:   15 * time.Second,
		ResponseHeaderTimeout: 30 * time.Second,
	}}
	c.Log.Debug("download", "url", url, "to", dst)
	resp := client.Do(req)

	var bar *mpb.Bar
	var progress *mpb.Progress
	if c.Progress != nil {
		progress = mpb.NewWithContext(ctx, mpb.WithOutput(c.Progress), mpb.WithWidth(40))
		name := filepath.Base(url)
		if len(name) > 40 {
			name = name[:37] + "..."
		}
		bar = progress.AddBar(resp.Size(),
			mpb.PrependDecorators(decor.Name(name, decor.WCSyncSpaceR)),
			mpb.AppendDecorators(decor.CountersKibiByte("% .1f / % .1f"), decor.Name(" "), decor.AverageSpeed(decor.SizeB1024(0), "% .1f")))
	}
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	seen, lastProgress := int64(-1), time.Now()
loop:
	for {
		select {
		case <-tick.C:
			if n := resp.BytesComplete(); n != seen {
				seen, lastProgress = n, time.Now()
			} else if time.Since(lastProgress) > IdleTimeout {
				cancel(errStalled)
			}
			if bar != nil {
				bar.SetTotal(resp.Size(), false)
				bar.SetCurrent(resp.BytesComplete())
			}
		case <-resp.Done:
			break loop
		}
	}
	if bar != nil {
		if resp.Err() == nil {
			bar.SetTotal(resp.BytesComplete(), true)
		} else {
			bar.Abort(false)
		}
		progress.Wait()
	}
	if err := resp.Err(); err != nil {
		if errors.Is(context.Cause(ctx), errStalled) && parent.Err() == nil {
			return fault.Infraf("download %s: no data for %s: the server stalled; the partial file is kept outside the cache and resumes next time", url, IdleTimeout)
		}
		return classifyDownloadError(parent, c.Dir, url, dst, resp, err)
	}
	return nil
}

func classifyDownloadError(ctx context.Context, dir, url, partial string, resp *grab.Response, err error) error {
	if ctx.Err() != nil {
		return fault.Infraf("download %s: interrupted (%v); the partial file is kept outside the cache and resumes next time", url, ctx.Err())
	}
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		os.Remove(partial)
		return fault.Infraf("download %s: %w", url, diskError(dir, err))
	}
	if errors.Is(err, grab.ErrBadLength) || errors.Is(err, io.ErrUnexpectedEOF) {
		os.Remove(partial)
		return fault.Infraf("download %s: the server sent a truncated file (%v); nothing entered the cache; retry", url, err)
	}
	if resp != nil && resp.HTTPResponse != nil && resp.HTTPResponse.StatusCode >= 400 {
		os.Remove(partial)
		code := resp.HTTPResponse.StatusCode
		hint := "check the URL, or set ENVCTL_MIRROR to a mirror"
		if code == http.StatusNotFound {
			hint = "upstream has no such file: check the version in the profile against `envctl catalog`, or set ENVCTL_MIRROR"
		}
		return fault.Infraf("download %s: HTTP %d %s: %s", url, code, http.StatusText(code), hint)
	}
	var nerr net.Error
	var opErr *net.OpError
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) || errors.As(err, &opErr) || errors.As(err, &nerr) {
		return fault.Infraf("download %s: cannot reach the server (%v); check the network or proxy, use a mirror (ENVCTL_MIRROR), or build locally (source gomod, `envctl image build`)", url, err)
	}
	return fault.Infraf("download %s: %w", url, err)
}

// Get fetches a small file (a checksum list) into memory, without caching.
func Get(ctx context.Context, client *http.Client, url string) ([]byte, error) {
	if strings.HasPrefix(url, "file://") {
		b, err := os.ReadFile(strings.TrimPrefix(url, "file://"))
		if err != nil {
			return nil, fault.Infraf("read %s: %w", url, err)
		}
		return b, nil
	}
	if client == nil {
		client = &http.Client{Timeout: 60 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, fault.Inputf("fetch %s: %w", url, err)
	}
	req.Header.Set("User-Agent", "envctl")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fault.Infraf("fetch %s: cannot reach the server (%v); check the network, or use a mirror (ENVCTL_MIRROR)", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fault.Infraf("fetch %s: HTTP %d %s", url, resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return nil, fault.Infraf("fetch %s: %w", url, err)
	}
	return b, nil
}

// ProgressFor returns w when it is a terminal, else nil (quiet).
func ProgressFor(w *os.File) io.Writer {
	if fi, err := w.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
		return w
	}
	return nil
}
