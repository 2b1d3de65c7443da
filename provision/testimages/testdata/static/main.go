// Command static is a tiny static binary for the registry test.
package main

func main() {}
