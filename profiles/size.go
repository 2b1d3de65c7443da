package profiles

import (
	"fmt"
	"strconv"
	"strings"
)

// Size is a byte count written like "2GiB", "512MiB", "10G" or "2048M".
type Size uint64

var sizeUnits = []struct {
	suffix string
	mult   uint64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
	{"B", 1},
}

// ParseSize reads a size. Bare numbers are MiB, as in libvirt and Lima's
// memory fields. Decimal units (GB, MB) are refused to avoid the 7% surprise.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	if t == "" {
		return 0, fmt.Errorf("empty size")
	}
	mult := uint64(1 << 20)
	num := t
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseUint(num, 10, 64)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("%q is not a size: write a positive whole number with a binary unit, like 2GiB or 512MiB", s)
	}
	if n > (1<<63)/mult {
		return 0, fmt.Errorf("%q is too large", s)
	}
	return Size(n * mult), nil
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
