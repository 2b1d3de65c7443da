package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/envctl/envctl/images/cache"
	"github.com/envctl/envctl/profiles"
	"github.com/envctl/envctl/profiles/base/fault"
	"github.com/envctl/envctl/profiles/lock"
	"github.com/envctl/envctl/provision/artifacts"
)

func newCacheCmd(a *app) *cobra.Command {
	cmd := &cobra.Command{Use: "cache", Short: "Inspect and keep the artifact cache: ls, verify, gc"}
	cmd.AddCommand(newCacheLsCmd(a), newCacheVerifyCmd(a), newCacheGCCmd(a))
	return cmd
}

func newCacheLsCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use: "ls", Short: "List the cache's blobs, unpacked archives and builds", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			_, entries, err := a.cacheEntries()
			if err != nil {
				return err
			}
			return a.emit(entries, func(w io.Writer) { writeEntries(w, entries, nil) })
		},
	}
}

func newCacheVerifyCmd(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "verify",
		Short: "Rehash every blob, unpacked archive and build; remove what is corrupt",
		Long: `verify rehashes everything in the cache against the digests recorded when
it entered the cache, ignoring the stamps that normally spare the hashing.
A corrupt entry is removed, so that the next run fetches or builds it
again, and the exit status is 3.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, entries, err := a.cacheEntries()
			if err != nil {
				return err
			}
			type row struct {
				cache.Entry
				Status string `json:"status"`
			}
			var rows []row
			var bad []error
			for _, e := range entries {
				if err := cmd.Context().Err(); err != nil {
					return err
				}
				st := "ok"
				if err := c.VerifyEntry(e); err != nil {
					st, bad = "CORRUPT, removed: "+err.Error(), append(bad, err)
				}
				rows = append(rows, row{e, st})
			}
			if err := a.emit(rows, func(w io.Writer) {
				tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "KIND\tNAME\tSTATUS")
				for _, r := range rows {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", r.Kind, r.Name, r.Status)
				}
				_ = tw.Flush()
			}); err != nil {
				return err
			}
			if len(bad) > 0 {
				return fault.Infraf("%d corrupt cache entries removed (%w); the next run fetches or builds them again", len(bad), errors.Join(bad...))
			}
			return nil
		},
	}
}

func newCacheGCCmd(a *app) *cobra.Command {
	var dryRun bool
	gc := &cobra.Command{
		Use:   "gc [PROFILE...]",
		Short: "Remove cache entries that no lock references",
		Long: `gc removes the blobs, unpacked archives and builds that no lock references,
every saved guest (warm and post-boot states: the next run boots cold and
saves them again), and temporary files older than a day. The locks are those of the PROFILEs
given, or of every profile in the search path (see ` + "`envctl profiles`" + `);
blobs of registered local images are kept too.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			gone, kept, err := a.cacheGC(cmd.Context(), args, dryRun)
			if gone == nil && kept == nil && err != nil {
				return err
			}
			verb := "removed"
			if dryRun {
				verb = "would remove"
			}
			out := struct {
				Removed []cache.Entry `json:"removed"`
				InUse   []cache.Entry `json:"in_use,omitempty"`
			}{gone, kept}
			if eerr := a.emit(out, func(w io.Writer) {
				writeEntries(w, gone, &verb)
				if len(kept) > 0 {
					inUse := "kept, in use by a running envctl:"
					writeEntries(w, kept, &inUse)
				}
			}); eerr != nil {
				return eerr
			}
			return err
		},
	}
	gc.Flags().BoolVar(&dryRun, "dry-run", false, "only list what would be removed")
	return gc
}

// cacheGC removes (or lists, with dryRun) the cache entries no lock of
// the named profiles (or of any profile) references, and old temporary
// files.
func (a *app) cacheGC(ctx context.Context, profileNames []string, dryRun bool) (gone, kept []cache.Entry, err error) {
	c, err := a.cache()
	if err != nil {
		return nil, nil, err
	}
	locks, err := a.locksOf(profileNames)
	if err != nil {
		return nil, nil, err
	}
	st, err := a.images()
	if err != nil {
		return nil, nil, err
	}
	refs := artifacts.Referenced(locks...)
	for d := range st.InUse() {
		refs[cache.EntryBlob] = mapWith(refs[cache.EntryBlob], d)
	}
	entries, err := c.Entries()
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	for _, e := range entries {
		if refs.Has(e) {
			continue
		}
		if !dryRun {
			if err := c.RemoveEntry(ctx, e); err != nil {
				var inUse *cache.InUseError
				if errors.As(err, &inUse) {
					kept = append(kept, e)
					continue
				}
				errs = append(errs, err)
				continue
			}
		}
		gone = append(gone, e)
	}
	if !dryRun {
		tmp, err := c.CleanTemp(tempAge)
		errs = append(errs, err)
		for _, p := range tmp {
			gone = append(gone, cache.Entry{Kind: "temporary", Name: p, Path: p})
		}
	}
	return gone, kept, errors.Join(errs...)
}

// tempAge is how old a temporary file in the cache must be before gc
// removes it (a download may still be resuming into a younger one).
const tempAge = 24 * time.Hour

func mapWith(m map[string]bool, k string) map[string]bool {
	if m == nil {
		m = map[string]bool{}
	}
	m[k] = true
	return m
}

// locksOf reads the lock files of the named profiles, or of every profile
// in the search path. A profile without a lock references nothing.
func (a *app) locksOf(names []string) ([]*lock.File, error) {
	paths, err := a.lockPathsOf(names)
	if err != nil {
		return nil, err
	}
	var out []*lock.File
	for _, p := range paths {
		if f, err := lock.Read(p); err == nil {
			out = append(out, f)
		}
	}
	return out, nil
}

// lockPathsOf lists the lock paths of the named profiles, or of every
// profile in the search path.
func (a *app) lockPathsOf(names []string) ([]string, error) {
	var paths []string
	if len(names) == 0 {
		for _, e := range a.profiles().List() {
			paths = append(paths, profiles.LockPathOf(e.Path))
		}
	}
	for _, n := range names {
		p, err := a.profiles().Find(n)
		if err != nil {
			return nil, err
		}
		paths = append(paths, profiles.LockPathOf(p))
	}
	return paths, nil
}

func writeEntries(w io.Writer, entries []cache.Entry, verb *string) {
	if len(entries) == 0 {
		fmt.Fprintln(w, "nothing")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	var total int64
	for _, e := range entries {
		prefix := ""
		if verb != nil {
			prefix = *verb + " "
		}
		fmt.Fprintf(tw, "%s%s\t%s\t%.1f MiB\n", prefix, e.Kind, e.Name, float64(e.Size)/(1<<20))
		total += e.Size
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "%d entries, %.1f MiB\n", len(entries), float64(total)/(1<<20))
}

// cacheEntries opens the cache and lists what it holds.
func (a *app) cacheEntries() (*cache.Cache, []cache.Entry, error) {
	c, err := a.cache()
	if err != nil {
		return nil, nil, err
	}
	entries, err := c.Entries()
	return c, entries, err
}
