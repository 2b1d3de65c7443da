// Command dynamic is a dynamically linked binary (cgo's resolver, as in a
// plain `go build` of envctl) for the workload image test.
package main

import (
	"fmt"
	"net"
	"os"
)

func main() {
	_ = net.ParseIP("127.0.0.1")
	fmt.Println("ran", len(os.Args))
}
