// Package artifacts owns getting a locked component onto the host as
// verified files: release and mirror downloads (checksum-verified into the
// cache, then unpacked), gomod builds at the exact module version (cached by
// module, sum and recipe, built once per machine), local file:// binaries
// (digest-checked against the lock), and components that come from the guest
// image's packages or the CRI-O bundle. It also reads the cri-api version a
// Go binary was compiled against, from its embedded build info.
package artifacts
