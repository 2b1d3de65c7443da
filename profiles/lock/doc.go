// Package lock owns envctl lock files as data: the exact artifacts a
// profile's cells run (URL and sha256, Go module and its sum, a local
// file's digest, a guest package), the image digest, and the profile inputs
// they were pinned from. It reads and writes them, refuses a lock that no
// longer matches its profile (naming the field that changed), and hands the
// pipeline one typed, locked cell. Making a lock needs the network and lives
// in provision/pin.
package lock
