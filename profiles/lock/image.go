package lock

import "maps"

// SameContent reports whether two image pins are the same image: the same
// name, kind, format, digests and package set. Only content decides
// whether a build or a pull matches a lock. How an image was made (the
// recipe's hash, the Debian archive state it was read from) is
// provenance: two builds with the same digests are the same image
// whatever day they were made on.
func (i Image) SameContent(o Image) bool {
	return i.Name == o.Name && i.Kind == o.Kind && i.Format == o.Format &&
		i.Digest == o.Digest && i.Kernel == o.Kernel && i.Initrd == o.Initrd &&
		maps.Equal(i.Packages, o.Packages)
}

// EarliestState is the archive state a lock records for an image: the
// earliest of the states known to give it. Debian re-dates its Release
// files every day even when no package changes, so each build of the
// same packages reads a later state; the earliest one known stays put,
// and it is a state the snapshot archive serves those packages at.
// States are snapshot timestamps (YYYYMMDDTHHMMSSZ, which sort as text);
// an empty one is unknown and loses to any other.
func EarliestState(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "" || a < b:
		return a
	default:
		return b
	}
}

// WithStateOf is the pin i with the earliest archive state of i and prev
// when both pin the same image: a lock made again for the same image
// keeps the state it recorded (or an earlier one learnt since).
func (i Image) WithStateOf(prev Image) Image {
	if i.SameContent(prev) {
		i.Snapshot = EarliestState(prev.Snapshot, i.Snapshot)
	}
	return i
}
