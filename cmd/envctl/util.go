package main

import (
	"context"
	"sort"

	"github.com/envctl/envctl/profiles/compat"
	"github.com/envctl/envctl/profiles/lock"
)

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// predictFromBinaries is filled in by the component installer: it reads the
// cri-api version out of already-fetched binaries.
var predictFromBinariesHook func(ctx context.Context, a *app, lf *lock.File, cell, test string) []compat.Finding

func (a *app) predictFromBinaries(ctx context.Context, lf *lock.File, cell, test string) []compat.Finding {
	if predictFromBinariesHook == nil || lf == nil {
		return nil
	}
	return predictFromBinariesHook(ctx, a, lf, cell, test)
}
