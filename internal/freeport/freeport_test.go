package freeport

import (
	"net"
	"strconv"
	"testing"
)

// The ports are distinct, below the ephemeral range, and free again once
// Ports returns: a member can bind them.
func TestPortsAreFreeAndBelowTheEphemeralRange(t *testing.T) {
	ports, err := Ports(20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[int]bool{}
	for _, p := range ports {
		if p < lowest || p >= ephemeralStart() || seen[p] {
			t.Fatalf("port %d: want distinct ports in [%d, %d)", p, lowest, ephemeralStart())
		}
		seen[p] = true
		ln, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d is not free after Ports returned: %v", p, err)
		}
		ln.Close()
	}
}

// Listen keeps its listeners open: the ports stay taken until closed.
func TestListenHoldsThePorts(t *testing.T) {
	lns, err := Listen("127.0.0.1", 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, ln := range lns {
		if _, err := net.Listen("tcp", ln.Addr().String()); err == nil {
			t.Fatalf("%s could be bound twice", ln.Addr())
		}
		ln.Close()
	}
}
