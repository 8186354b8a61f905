package transport

import (
	"net/http"
	"net/netip"
	"strings"
)

// maxHops is how many right-most entries of a forwarding header ClientAddr
// considers: a header can hold thousands of entries, a real proxy chain a
// handful. Walking stops at the left-most of them.
const maxHops = 32

// ClientAddr returns the address of the client that made r.
//
// When the direct peer (r.RemoteAddr) is not in trusted, it is the answer:
// forwarding headers from untrusted peers are ignored. When it is trusted,
// X-Forwarded-For and the RFC 7239 Forwarded header's for= parameters are
// walked from right to left, skipping addresses in trusted, and the first
// untrusted address is returned. Entries to the left of it were written by the
// client and are never believed. If the walk meets an entry that is not an
// address ("unknown", an obfuscated "_id", garbage), or only trusted ones, it
// stops and returns the last trusted address seen: the farthest hop known.
//
// If both headers are present they must yield the same address: a proxy
// usually maintains only one of them, and the other may then be the client's
// forgery. When they disagree, ClientAddr returns the zero Addr, which the
// caller should treat as a bad request. It also returns the zero Addr when
// r.RemoteAddr is not an IP address.
//
// Addresses are returned unmapped (::ffff:1.2.3.4 becomes 1.2.3.4) and
// without zone.
func ClientAddr(r *http.Request, trusted []netip.Prefix) netip.Addr {
	peer, ok := parseHop(r.RemoteAddr)
	if !ok {
		return netip.Addr{}
	}
	if !isTrusted(peer, trusted) {
		return peer
	}
	var hops hopRing
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops.pushXFF(v)
	}
	xff, hasXFF := hops.walk(peer, trusted)

	hops = hopRing{}
	for _, v := range r.Header.Values("Forwarded") {
		hops.pushForwarded(v)
	}
	fwd, hasFwd := hops.walk(peer, trusted)

	switch {
	case hasXFF && hasFwd:
		if xff != fwd {
			return netip.Addr{}
		}
		return xff
	case hasXFF:
		return xff
	case hasFwd:
		return fwd
	}
	return peer
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// badHop marks a malformed stretch of a Forwarded header.
const badHop = "\x00"

// hopRing keeps the right-most maxHops entries of a header.
type hopRing struct {
	buf [maxHops]string
	n   int // entries pushed in total
}

func (h *hopRing) push(s string) {
	h.buf[h.n%maxHops] = s
	h.n++
}

// walk goes through the entries from right to left; see ClientAddr.
func (h *hopRing) walk(peer netip.Addr, trusted []netip.Prefix) (addr netip.Addr, present bool) {
	if h.n == 0 {
		return peer, false
	}
	last := peer
	for i := h.n - 1; i >= 0 && i >= h.n-maxHops; i-- {
		a, ok := parseHop(h.buf[i%maxHops])
		if !ok {
			return last, true
		}
		if !isTrusted(a, trusted) {
			return a, true
		}
		last = a
	}
	return last, true
}

// pushXFF pushes the comma-separated entries of an X-Forwarded-For value;
// empty entries are skipped.
func (h *hopRing) pushXFF(v string) {
	for v != "" {
		e, rest, _ := strings.Cut(v, ",")
		if e = strings.TrimSpace(e); e != "" {
			h.push(e)
		}
		v = rest
	}
}

// pushForwarded pushes the for= value of each element of a Forwarded value
// (RFC 7239 section 4), "" for an element without one. On a syntax error it
// pushes badHop and ignores the rest of v: its boundaries can't be trusted.
func (h *hopRing) pushForwarded(v string) {
	i := 0
	for {
		var forVal string
		hasFor, empty := false, true
		for {
			i = skipOWS(v, i)
			start := i
			for i < len(v) && isTokenChar(v[i]) {
				i++
			}
			if key := v[start:i]; key != "" {
				empty = false
				if i >= len(v) || v[i] != '=' {
					h.push(badHop)
					return
				}
				i++
				val, next, ok := forwardedValue(v, i)
				if !ok || (hasFor && strings.EqualFold(key, "for")) {
					h.push(badHop)
					return
				}
				i = next
				if strings.EqualFold(key, "for") {
					forVal, hasFor = val, true
				}
			}
			i = skipOWS(v, i)
			if i < len(v) && v[i] == ';' {
				i++
				continue
			}
			break
		}
		if !empty {
			h.push(forVal)
		}
		switch {
		case i >= len(v):
			return
		case v[i] == ',':
			i++
		default:
			h.push(badHop)
			return
		}
	}
}

// forwardedValue parses a token or a quoted-string at v[i:].
func forwardedValue(v string, i int) (val string, next int, ok bool) {
	if i < len(v) && v[i] == '"' {
		var b strings.Builder
		for i++; i < len(v); i++ {
			switch c := v[i]; c {
			case '"':
				return b.String(), i + 1, true
			case '\\':
				if i+1 >= len(v) {
					return "", i, false
				}
				i++
				b.WriteByte(v[i])
			default:
				b.WriteByte(c)
			}
		}
		return "", i, false // unterminated
	}
	start := i
	for i < len(v) && isTokenChar(v[i]) {
		i++
	}
	if i == start {
		return "", i, false
	}
	return v[start:i], i, true
}

func skipOWS(v string, i int) int {
	for i < len(v) && (v[i] == ' ' || v[i] == '\t') {
		i++
	}
	return i
}

// isTokenChar reports whether c is a tchar (RFC 9110 section 5.6.2).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// parseHop parses "ip", "ip:port", "[ipv6]" or "[ipv6]:port".
func parseHop(s string) (netip.Addr, bool) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		ap, err2 := netip.ParseAddrPort(s)
		switch {
		case err2 == nil:
			a = ap.Addr()
		case len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']':
			if a, err = netip.ParseAddr(s[1 : len(s)-1]); err != nil || !a.Is6() {
				return netip.Addr{}, false
			}
		default:
			return netip.Addr{}, false
		}
	}
	return a.WithZone("").Unmap(), true
}
