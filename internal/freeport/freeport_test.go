package freeport

import (
	"net"
	"strconv"
	"testing"
)

func TestAddrsAreDistinctListenableAndBelowTheEphemeralRange(t *testing.T) {
	high := ephemeralLow()
	seen := map[string]bool{}
	for range 5 {
		for _, a := range Addrs(t, "127.0.0.1", 4) {
			_, p, err := net.SplitHostPort(a)
			if err != nil {
				t.Fatal(err)
			}
			port, _ := strconv.Atoi(p)
			if port < lowest || port >= high {
				t.Errorf("port %d outside [%d, %d)", port, lowest, high)
			}
			if seen[p] {
				t.Errorf("port %s handed out twice", p)
			}
			seen[p] = true
			ln, err := net.Listen("tcp", a)
			if err != nil {
				t.Errorf("listen on %s: %v", a, err)
				continue
			}
			ln.Close()
		}
	}
}

func TestPickSkipsATakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	if got, err := pick("127.0.0.1", 1, port, port+1); err == nil {
		t.Errorf("the held port %d was handed out as %v", port, got)
	}
}
