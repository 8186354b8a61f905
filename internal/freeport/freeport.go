// Package freeport names loopback addresses for servers a test must know
// before they start: cluster routes each node lists for its peers, or a
// broker restarted on the same address.
//
// Binding port 0 and closing it is not enough. That port comes from the
// kernel's ephemeral range, the same range every outgoing connection draws
// its source port from, so a node's own dial to a peer can take it before
// the node listens on it (CI saw "bind: address already in use" on a
// cluster route port this way). The ports given here lie below that range.
package freeport

import (
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// lowest is the lowest port handed out: above the usual fixed service
// ports, and leaving over 15,000 ports below a default ephemeral range.
const lowest = 17000

var (
	mu    sync.Mutex
	given = map[string]bool{} // ports handed out by this process, by port
)

// Addr returns one free address on 127.0.0.1.
func Addr(t testing.TB) string {
	t.Helper()
	return Addrs(t, "127.0.0.1", 1)[0]
}

// Addrs returns n addresses on ip whose ports were free a moment ago, lie
// outside the ephemeral range and were never handed out before in this
// process (on any ip), so one test's lists never overlap.
func Addrs(t testing.TB, ip string, n int) []string {
	t.Helper()
	high := ephemeralLow()
	if high-lowest < 1000 {
		t.Fatalf("freeport: the ephemeral range starts at %d, leaving too few ports above %d", high, lowest)
	}
	out, err := pick(ip, n, lowest, high)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// pick draws n ports from [low, high).
func pick(ip string, n, low, high int) ([]string, error) {
	mu.Lock()
	defer mu.Unlock()
	var out []string
	for tries := 0; len(out) < n; tries++ {
		if tries > 10000 {
			return nil, fmt.Errorf("freeport: no free port on %s in [%d, %d) after %d tries", ip, low, high, tries)
		}
		port := strconv.Itoa(low + rand.IntN(high-low))
		if given[port] {
			continue
		}
		addr := net.JoinHostPort(ip, port)
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			continue // taken by someone else
		}
		ln.Close()
		given[port] = true
		out = append(out, addr)
	}
	return out, nil
}

// ephemeralLow is the first port of the kernel's ephemeral range, or the
// usual Linux default where that cannot be read.
func ephemeralLow() int {
	const linuxDefault = 32768
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return linuxDefault
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return linuxDefault
	}
	low, err := strconv.Atoi(f[0])
	if err != nil {
		return linuxDefault
	}
	return low
}
