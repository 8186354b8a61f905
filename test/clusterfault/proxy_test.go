package clusterfault

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"testing"
	"time"
)

// echo serves a line-echo server on loopback until the test ends.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	return ln.Addr().String()
}

func linkTo(t *testing.T, target string) *Link {
	t.Helper()
	l, err := NewLink("127.0.0.1:0", target, "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	return l
}

func dialLink(t *testing.T, l *Link) (net.Conn, *bufio.Reader) {
	t.Helper()
	c, err := net.Dial("tcp", l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

// roundTrip sends a line and returns the echo, or the read error.
func roundTrip(c net.Conn, r *bufio.Reader, line string, wait time.Duration) (string, error) {
	if _, err := c.Write([]byte(line + "\n")); err != nil {
		return "", err
	}
	c.SetReadDeadline(time.Now().Add(wait))
	defer c.SetReadDeadline(time.Time{})
	s, err := r.ReadString('\n')
	return s, err
}

func TestLinkPassesDropsAndHeals(t *testing.T) {
	l := linkTo(t, echo(t))
	c, r := dialLink(t, l)
	if got, err := roundTrip(c, r, "one", 10*time.Second); err != nil || got != "one\n" {
		t.Fatalf("pass: %q, %v", got, err)
	}
	l.Set(Drop, 0)
	// Nothing comes back while the link drops; a short read timeout is
	// the point here, not a wait for something to happen.
	if got, err := roundTrip(c, r, "two", 200*time.Millisecond); err == nil {
		t.Fatalf("drop: got %q through a dropping link", got)
	}
	l.Set(Pass, 0)
	// What was held goes through once the link heals, in order.
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if got, err := r.ReadString('\n'); err != nil || got != "two\n" {
		t.Fatalf("after healing: %q, %v", got, err)
	}
	if got, err := roundTrip(c, r, "three", 10*time.Second); err != nil || got != "three\n" {
		t.Fatalf("after healing: %q, %v", got, err)
	}
}

func TestLinkCutClosesConnections(t *testing.T) {
	l := linkTo(t, echo(t))
	c, r := dialLink(t, l)
	if _, err := roundTrip(c, r, "one", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	l.Set(Cut, 0)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := r.ReadString('\n'); err == nil {
		t.Fatal("connection still open after a cut")
	}
	// New connections are closed at once while cut.
	c2, r2 := dialLink(t, l)
	if got, err := roundTrip(c2, r2, "two", 10*time.Second); err == nil {
		t.Fatalf("got %q through a cut link", got)
	}
	l.Set(Pass, 0)
	c3, r3 := dialLink(t, l)
	if got, err := roundTrip(c3, r3, "three", 10*time.Second); err != nil || got != "three\n" {
		t.Fatalf("after healing: %q, %v", got, err)
	}
}

func TestLinkDelays(t *testing.T) {
	l := linkTo(t, echo(t))
	c, r := dialLink(t, l)
	l.Set(Pass, 50*time.Millisecond)
	start := time.Now()
	if _, err := roundTrip(c, r, "slow", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	// Each way is delayed: at least twice the delay.
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("round trip took %s through a 50ms link", d)
	}
}

func TestBypassesFindsDirectConnections(t *testing.T) {
	target := echo(t)
	_, portStr, _ := net.SplitHostPort(target)
	port, _ := strconv.Atoi(portStr)
	l, err := NewLink("127.0.0.2:0", target, "127.0.0.3")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(l.Close)
	c, r := dialLink(t, l)
	if _, err := roundTrip(c, r, "via", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got, err := Bypasses([]int{port}, "127.0.0.3"); err != nil || len(got) != 0 {
		t.Fatalf("through the link: bypasses %q, %v; want none", got, err)
	}
	d, err := net.Dial("tcp", target)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	dr := bufio.NewReader(d)
	if _, err := roundTrip(d, dr, "direct", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if got, err := Bypasses([]int{port}, "127.0.0.3"); err != nil || len(got) != 1 {
		t.Fatalf("direct: bypasses %q, %v; want one", got, err)
	}
}
