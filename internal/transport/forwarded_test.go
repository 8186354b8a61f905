package transport

import (
	"net/http"
	"net/netip"
	"strings"
	"testing"
)

func TestClientAddr(t *testing.T) {
	trusted := []netip.Prefix{
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("127.0.0.1/32"),
		netip.MustParsePrefix("2001:db8:ffff::/48"),
	}
	tests := []struct {
		name      string
		peer      string
		xff       []string
		forwarded []string
		want      string // "" = the zero Addr
	}{
		{name: "untrusted peer, headers ignored", peer: "203.0.113.5:1234", xff: []string{"1.1.1.1"}, want: "203.0.113.5"},
		{name: "trusted peer, no header", peer: "10.0.0.2:1234", want: "10.0.0.2"},
		{name: "one hop", peer: "10.0.0.2:1234", xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
		{name: "spoofed left-most entry", peer: "10.0.0.2:1234", xff: []string{"1.2.3.4, 198.51.100.7"}, want: "198.51.100.7"},
		{name: "spoofed trusted-looking left-most entry", peer: "10.0.0.2:1234", xff: []string{"10.9.9.9, 198.51.100.7"}, want: "198.51.100.7"},
		{name: "spoofed chain, two trusted proxies", peer: "127.0.0.1:1", xff: []string{"6.6.6.6, 7.7.7.7, 198.51.100.7, 10.1.1.1"}, want: "198.51.100.7"},
		{name: "several header lines", peer: "10.0.0.2:1234", xff: []string{"6.6.6.6", "198.51.100.7, 10.0.0.3"}, want: "198.51.100.7"},
		{name: "all trusted", peer: "10.0.0.2:1", xff: []string{"10.0.0.5, 10.0.0.4"}, want: "10.0.0.5"},
		{name: "garbage stops the walk", peer: "10.0.0.2:1", xff: []string{"198.51.100.7, junk, 10.0.0.4"}, want: "10.0.0.4"},
		{name: "garbage left of the client is ignored", peer: "10.0.0.2:1", xff: []string{"junk, 198.51.100.7"}, want: "198.51.100.7"},
		{name: "port and brackets", peer: "10.0.0.2:1", xff: []string{"[2001:db8::7]:443, 198.51.100.7:80"}, want: "198.51.100.7"},
		{name: "ipv6 hop", peer: "10.0.0.2:1", xff: []string{"2001:db8::7"}, want: "2001:db8::7"},
		{name: "mapped address", peer: "[::ffff:10.0.0.2]:1", xff: []string{"::ffff:198.51.100.7"}, want: "198.51.100.7"},
		{name: "ipv6 trusted peer", peer: "[2001:db8:ffff::1]:1", xff: []string{"198.51.100.7"}, want: "198.51.100.7"},
		{name: "empty entries", peer: "10.0.0.2:1", xff: []string{" , 198.51.100.7 ,"}, want: "198.51.100.7"},
		{name: "forwarded", peer: "10.0.0.2:1", forwarded: []string{`for=192.0.2.60;proto=http;by=203.0.113.43`}, want: "192.0.2.60"},
		{name: "forwarded quoted ipv6", peer: "10.0.0.2:1", forwarded: []string{`for="[2001:db8:cafe::17]:4711"`}, want: "2001:db8:cafe::17"},
		{name: "forwarded spoofed left-most", peer: "10.0.0.2:1", forwarded: []string{`for=6.6.6.6, For="192.0.2.43:80", for=10.0.0.9`}, want: "192.0.2.43"},
		{name: "forwarded quoted comma", peer: "10.0.0.2:1", forwarded: []string{`for=6.6.6.6;by="a, for=1.1.1.1", for=192.0.2.43`}, want: "192.0.2.43"},
		{name: "forwarded unknown", peer: "10.0.0.2:1", forwarded: []string{`for=192.0.2.43, for=unknown, for=10.0.0.9`}, want: "10.0.0.9"},
		{name: "forwarded obfuscated", peer: "10.0.0.2:1", forwarded: []string{`for=_hidden`}, want: "10.0.0.2"},
		{name: "forwarded element without for", peer: "10.0.0.2:1", forwarded: []string{`for=192.0.2.43, by=10.0.0.1`}, want: "10.0.0.2"},
		{name: "forwarded malformed right-most", peer: "10.0.0.2:1", forwarded: []string{`for=192.0.2.43, for="6.6.6.6`}, want: "10.0.0.2"},
		{name: "forwarded malformed earlier line", peer: "10.0.0.2:1", forwarded: []string{`for="6.6.6.6`, `for=192.0.2.43`}, want: "192.0.2.43"},
		{name: "forwarded duplicate for", peer: "10.0.0.2:1", forwarded: []string{`for=192.0.2.43;for=6.6.6.6`}, want: "10.0.0.2"},
		{name: "both headers agree", peer: "10.0.0.2:1", xff: []string{"6.6.6.6, 192.0.2.43"}, forwarded: []string{"for=192.0.2.43"}, want: "192.0.2.43"},
		{name: "forged forwarded with xff", peer: "10.0.0.2:1", xff: []string{"192.0.2.43"}, forwarded: []string{"for=6.6.6.6"}, want: ""},
		{name: "forged xff with forwarded", peer: "10.0.0.2:1", xff: []string{"6.6.6.6"}, forwarded: []string{"for=192.0.2.43"}, want: ""},
		{name: "non-IP peer", peer: "@", xff: []string{"192.0.2.43"}, want: ""},
		{name: "peer without port", peer: "10.0.0.2", xff: []string{"192.0.2.43"}, want: "192.0.2.43"},
		{name: "zone stripped", peer: "10.0.0.2:1", xff: []string{"fe80::1%eth0"}, want: "fe80::1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &http.Request{RemoteAddr: tt.peer, Header: http.Header{}}
			for _, v := range tt.xff {
				r.Header.Add("X-Forwarded-For", v)
			}
			for _, v := range tt.forwarded {
				r.Header.Add("Forwarded", v)
			}
			got := ClientAddr(r, trusted)
			if (tt.want == "" && got.IsValid()) || (tt.want != "" && got.String() != tt.want) {
				t.Errorf("ClientAddr = %v, want %q", got, tt.want)
			}
		})
	}
}

func TestClientAddrLongChain(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	// 100 000 trusted entries: walking stops after maxHops, memory stays flat.
	hdr := strings.Repeat("10.0.0.1,", 100000) + "10.0.0.3"
	r := &http.Request{RemoteAddr: "10.0.0.2:1", Header: http.Header{"X-Forwarded-For": {hdr}}}
	if got := ClientAddr(r, trusted); got != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("ClientAddr = %v", got)
	}
	allocs := testing.AllocsPerRun(10, func() { ClientAddr(r, trusted) })
	if allocs > 2 {
		t.Errorf("ClientAddr allocates %v times on a long header", allocs)
	}
}
