// Package freeport finds TCP ports for the members that tests and kvbench
// start, stop and start again on the same port.
//
// Ports the kernel hands out for ":0" come from its ephemeral range, the
// same range outgoing connections take their local ports from. A member
// restarted on such a port can find it taken by some client's connection
// in the meantime. The ports here lie below that range, so only another
// listener can take them.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
)

// lowest is the first port considered; below it live well-known services.
const lowest = 10000

// Listen binds n listeners on host ("" for every interface, as members
// bind their client port), each on a distinct free port below the
// ephemeral range. The caller closes them.
func Listen(host string, n int) ([]net.Listener, error) {
	hi := ephemeralStart() - 1
	var lns []net.Listener
	for tries := 0; len(lns) < n; tries++ {
		if tries == 10000 {
			for _, ln := range lns {
				ln.Close()
			}
			return nil, fmt.Errorf("no %d free ports in %d-%d", n, lowest, hi)
		}
		p := lowest + rand.IntN(hi-lowest+1)
		ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(p)))
		if err != nil {
			continue // taken
		}
		lns = append(lns, ln)
	}
	return lns, nil
}

// Ports returns n distinct ports that are free on every interface now.
func Ports(n int) ([]int, error) {
	lns, err := Listen("", n)
	if err != nil {
		return nil, err
	}
	ports := make([]int, n)
	for i, ln := range lns {
		ports[i] = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
	}
	return ports, nil
}

// ephemeralStart is the first port of Linux's ephemeral range, or its
// default where that cannot be read.
func ephemeralStart() int {
	const linuxDefault = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	if f := strings.Fields(string(b)); len(f) == 2 {
		if p, err := strconv.Atoi(f[0]); err == nil && p > lowest+1000 {
			return p
		}
	}
	return linuxDefault
}
