package profiles

import (
	"fmt"
	"regexp"
	"strings"

	units "github.com/docker/go-units"
)

// Size is a byte count written like "2GiB", "512MiB", "10G" or "2048".
type Size uint64

var (
	bareNumber  = regexp.MustCompile(`^\d+(\.\d+)?$`)
	decimalUnit = regexp.MustCompile(`(?i)^\d+(\.\d+)?\s*[kmgtp]b$`)
)

// ParseSize reads a size with binary units (go-units' RAMInBytes). A bare
// number means MiB, as in libvirt's and Lima's memory fields. "2GB" is
// refused: go-units would read it as GiB, which is a 7% surprise either way.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	if decimalUnit.MatchString(t) {
		return 0, fmt.Errorf("%q is ambiguous: write a binary unit, like 2GiB or 512MiB", s)
	}
	if bareNumber.MatchString(t) {
		t += "MiB"
	}
	n, err := units.RAMInBytes(t)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a size: write a positive number with a binary unit, like 2GiB or 512MiB", s)
	}
	if n > 1<<50 {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(n), nil
}

// String prints the size in the largest binary unit that divides it.
func (s Size) String() string {
	for _, u := range []struct {
		suffix string
		mult   uint64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if uint64(s) >= u.mult && uint64(s)%u.mult == 0 {
			return fmt.Sprintf("%d%s", uint64(s)/u.mult, u.suffix)
		}
	}
	return fmt.Sprintf("%dB", uint64(s))
}

// MiB returns the size in MiB, rounded up.
func (s Size) MiB() uint64 { return (uint64(s) + (1 << 20) - 1) >> 20 }

// MarshalText writes the human form, so JSON and YAML output stay readable.
func (s Size) MarshalText() ([]byte, error) { return []byte(s.String()), nil }
