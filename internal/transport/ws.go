// Package transport turns listeners and HTTP requests into net.Conns that
// carry an MQTT byte stream: WebSocket (ws.go, wsconn.go), the PROXY
// protocol (proxyproto.go) and forwarding headers (forwarded.go). Nothing here
// knows about MQTT packets or the broker.
package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
)

// Default WebSocket subprotocols, in the server's order of preference.
// [MQTT-6.0.0-3] [MQTT-6.0.0-4]: MQTT 3.1.1 and 5.0 use "mqtt"; MQTT 3.1
// clients (and some 3.1.1 clients) offer "mqttv3.1".
var defaultSubprotocols = []string{"mqtt", "mqttv3.1"}

// WSOptions configures NewWSHandler. The zero value is usable.
//
// There is no message or frame size limit: frames are streamed into the
// caller's buffer, never reassembled, so the adapter holds no payload and the
// MQTT layer bounds packet sizes. Control frames are bounded at 125 bytes by
// RFC 6455 section 5.5.
type WSOptions struct {
	// Subprotocols the server accepts, in its order of preference: the first
	// of these that the client offers is selected. Default: "mqtt",
	// "mqttv3.1".
	Subprotocols []string

	// AllowNoSubprotocol accepts a request whose Sec-WebSocket-Protocol header
	// is missing; no subprotocol is then selected. By default such a request
	// is refused with 400. A request that offers subprotocols, none of which is
	// accepted, is always refused with 400.
	AllowNoSubprotocol bool

	// AllowedOrigins lists the browser origins allowed to connect, as
	// serialized origins ("https://app.example.com", "http://localhost:8080")
	// or patterns where '*' matches any run of characters except '/'
	// ("https://*.example.com" matches every subdomain, at any depth; "*"
	// alone matches every origin). Matching is ASCII case-insensitive.
	//
	// Whatever this list holds, two kinds of requests are always allowed:
	// requests without an Origin header (non-browser clients: the Origin
	// check protects browser users from cross-site pages, it does not
	// authenticate anybody) and same-origin requests, e.g. a dashboard
	// served by the broker (see PublicOrigins). So the default, an empty
	// list, allows only those. Anything else is refused with 403.
	AllowedOrigins []string

	// PublicOrigins are the listener's own origins, scheme://host[:port],
	// as browsers reach it ("https://broker.example.com"). An Origin is
	// same-origin when its scheme, host and port equal one of these, or
	// when its scheme is the connection's (https over TLS, else http), its
	// port is the connection's local port and its host is one the
	// connection proves: the local IP address itself, "localhost" on a
	// loopback connection, or (over TLS) a name of ServerCert. The
	// request's Host header is never trusted for this: under DNS
	// rebinding a page of evil.example, its name now resolving to the
	// broker, sends Host: evil.example:PORT and Origin:
	// http://evil.example:PORT, which match each other.
	PublicOrigins []string

	// ServerCert returns the listener's current certificate (nil: none);
	// over TLS, an Origin host it is valid for is same-origin, since a
	// browser reached the listener under that name only after verifying
	// it.
	ServerCert func() *x509.Certificate

	// TrustedProxies, when not empty, makes the handler replace the
	// connection's RemoteAddr with ClientAddr(r, TrustedProxies), i.e. the
	// client address from X-Forwarded-For or Forwarded when the request came
	// through these proxies (port 0 then). A request whose two forwarding
	// headers disagree is refused with 400. Peers that are not IP addresses
	// (unix sockets) keep their address.
	TrustedProxies []netip.Prefix

	// Compression accepts permessage-deflate (RFC 7692) when a client
	// offers it, always without context takeover in either direction (see
	// wsdeflate.go). Off: the offer is ignored and nothing is compressed.
	Compression bool

	// MaxMessageSize bounds the decompressed size of one compressed message,
	// so that a small compressed message cannot expand without end; a
	// larger one fails the connection with close 1009. 0: no bound.
	// Uncompressed messages are streamed and not bounded here.
	MaxMessageSize int64

	// OnOriginRefused, when set, is called in the handler's goroutine for
	// each request refused with 403 for its Origin, so that the refusal
	// can be logged (a browser page sees only a closed socket).
	OnOriginRefused func(r *http.Request)

	// OnRefused, when set, is called in the handler's goroutine for every
	// request refused before the upgrade, with one of the Refused*
	// reasons (an Origin refusal too, after OnOriginRefused), so that
	// refusals can be counted and logged.
	OnRefused func(r *http.Request, reason string)
}

// Reasons given to WSOptions.OnRefused.
const (
	RefusedNotWebSocket = "not_websocket" // no Upgrade: websocket (426)
	RefusedOrigin       = "origin"        // Origin not allowed (403)
	RefusedSubprotocol  = "subprotocol"   // no accepted Sec-WebSocket-Protocol (400)
	RefusedForwarded    = "forwarded"     // X-Forwarded-For and Forwarded disagree (400)
	RefusedBadKey       = "bad_key"       // missing or malformed Sec-WebSocket-Key (400)
	RefusedBadVersion   = "bad_version"   // Sec-WebSocket-Version not 13 (426)
	RefusedHandshake    = "handshake"     // another handshake error (method, Connection header...)
	RefusedWrongPath    = "wrong_path"    // an upgrade at a path that serves no WebSocket (404; see WrongPathHandler)
)

// RefusedReasons lists every reason, for metrics.
var RefusedReasons = []string{RefusedNotWebSocket, RefusedOrigin, RefusedSubprotocol, RefusedForwarded,
	RefusedBadKey, RefusedBadVersion, RefusedHandshake, RefusedWrongPath}

type wsHandler struct {
	protocols      []string
	allowNone      bool
	origins        []string // lowercased patterns
	public         []string // PublicOrigins, normalized by originParts
	serverCert     func() *x509.Certificate
	trustedProxies []netip.Prefix
	compression    bool
	maxMessage     int64
	accept         func(net.Conn, *http.Request)
	onOrigin       func(*http.Request)
	onRefused      func(*http.Request, string)
}

// NewWSHandler returns an http.Handler that checks the Origin (403 when
// refused) and the subprotocol (400 when none fits), upgrades the request to a
// WebSocket and calls accept, in the handler's goroutine, with a *WSConn that
// carries the binary messages as a byte stream. The handler returns when
// accept returns; accept owns the connection and must Close it eventually
// (now, or later from another goroutine). HTTP/2 requests cannot be hijacked
// and get a 500: serve WebSockets over HTTP/1.1.
func NewWSHandler(opts WSOptions, accept func(c net.Conn, r *http.Request)) http.Handler {
	h := &wsHandler{
		protocols:      opts.Subprotocols,
		allowNone:      opts.AllowNoSubprotocol,
		trustedProxies: opts.TrustedProxies,
		compression:    opts.Compression,
		maxMessage:     opts.MaxMessageSize,
		accept:         accept,
		onOrigin:       opts.OnOriginRefused,
		onRefused:      opts.OnRefused,
	}
	if len(h.protocols) == 0 {
		h.protocols = defaultSubprotocols
	}
	for _, o := range opts.AllowedOrigins {
		h.origins = append(h.origins, strings.ToLower(o))
	}
	for _, o := range opts.PublicOrigins {
		if scheme, host, port, ok := originParts(strings.ToLower(o)); ok {
			h.public = append(h.public, scheme+"://"+net.JoinHostPort(host, port))
		}
	}
	h.serverCert = opts.ServerCert
	return h
}

func (h *wsHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !headerHasToken(r.Header, "Upgrade", "websocket") {
		h.refused(r, RefusedNotWebSocket)
		w.Header().Set("Upgrade", "websocket")
		w.Header().Set("Sec-WebSocket-Version", "13")
		http.Error(w, "this endpoint serves MQTT over WebSocket: connect with a WebSocket client", http.StatusUpgradeRequired)
		return
	}
	if !h.originAllowed(r) {
		if h.onOrigin != nil {
			h.onOrigin(r)
		}
		h.refused(r, RefusedOrigin)
		http.Error(w, fmt.Sprintf("websocket: origin %q is not allowed", r.Header.Get("Origin")), http.StatusForbidden)
		return
	}
	proto, offered := selectSubprotocol(r.Header, h.protocols)
	if proto == "" && (offered || !h.allowNone) {
		h.refused(r, RefusedSubprotocol)
		msg := fmt.Sprintf("websocket: no supported subprotocol offered: MQTT over WebSocket requires Sec-WebSocket-Protocol with one of %s", strings.Join(h.protocols, ", "))
		http.Error(w, msg, http.StatusBadRequest)
		return
	}
	var remote net.Addr
	if peer, err := netip.ParseAddrPort(r.RemoteAddr); err == nil && len(h.trustedProxies) > 0 {
		a := ClientAddr(r, h.trustedProxies)
		if !a.IsValid() {
			h.refused(r, RefusedForwarded)
			http.Error(w, "websocket: X-Forwarded-For and Forwarded headers disagree", http.StatusBadRequest)
			return
		}
		if peer.Addr().Unmap() != a {
			remote = net.TCPAddrFromAddrPort(netip.AddrPortFrom(a, 0))
		}
	}

	u := ws.HTTPUpgrader{}
	if proto != "" {
		u.Protocol = func(s string) bool { return s == proto }
	}
	deflate := false
	if h.compression {
		u.Negotiate = negotiateDeflate(&deflate)
	}
	conn, rw, hs, err := u.Upgrade(r, w)
	if err != nil {
		switch {
		case errors.Is(err, ws.ErrHandshakeBadSecKey):
			h.refused(r, RefusedBadKey)
		case errors.Is(err, ws.ErrHandshakeBadSecVersion), errors.Is(err, ws.ErrHandshakeUpgradeRequired):
			h.refused(r, RefusedBadVersion)
		default:
			h.refused(r, RefusedHandshake)
		}
		// The upgrader has written the error response on the hijacked conn.
		if conn != nil {
			_ = conn.Close()
		}
		return
	}
	var pre []byte
	if n := rw.Reader.Buffered(); n > 0 {
		// The client pipelined frames after its request; keep them, not the
		// 4 KiB reader that holds them.
		b, _ := rw.Reader.Peek(n)
		pre = append([]byte(nil), b...)
	}
	c := newWSConn(conn, pre, false, hs.Protocol)
	if deflate {
		c.enableDeflate(h.maxMessage)
	}
	if remote != nil {
		c.remote = remote
	}
	// Copies, so that the connection does not keep the request alive.
	c.origin, c.path = strings.Clone(r.Header.Get("Origin")), strings.Clone(r.URL.Path)
	defer func() {
		// net/http recovers and logs a handler's panic but does not close a
		// hijacked conn.
		if p := recover(); p != nil {
			_ = c.conn.Close()
			panic(p)
		}
	}()
	h.accept(c, r)
}

func (h *wsHandler) refused(r *http.Request, reason string) {
	if h.onRefused != nil {
		h.onRefused(r, reason)
	}
}

// WrongPathHandler serves next, except that a WebSocket upgrade request
// (which next, serving no WebSocket, would answer with a page or a 404
// that a browser shows only as a closed socket) is refused with 404 and a
// message naming the paths that do serve MQTT, and reported to onRefused
// with RefusedWrongPath.
func WrongPathHandler(paths []string, onRefused func(r *http.Request, reason string), next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !headerHasToken(r.Header, "Upgrade", "websocket") {
			next.ServeHTTP(w, r)
			return
		}
		if onRefused != nil {
			onRefused(r, RefusedWrongPath)
		}
		http.Error(w, fmt.Sprintf("websocket: no MQTT at %s: connect to %s", r.URL.Path, strings.Join(paths, " or ")), http.StatusNotFound)
	})
}

// selectSubprotocol returns the first of accepted that the client offers, and
// whether the client offered any subprotocol at all.
func selectSubprotocol(hdr http.Header, accepted []string) (proto string, offered bool) {
	var offers []string
	for _, v := range hdr.Values("Sec-WebSocket-Protocol") {
		for _, p := range strings.Split(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				offers = append(offers, p)
			}
		}
	}
	for _, a := range accepted {
		for _, o := range offers {
			if o == a { // subprotocol tokens are case-sensitive (RFC 6455 11.5)
				return a, true
			}
		}
	}
	return "", len(offers) > 0
}

// headerHasToken reports whether a comma-separated header holds token,
// ASCII case-insensitively.
func headerHasToken(hdr http.Header, key, token string) bool {
	for _, v := range hdr.Values(key) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// originAllowed applies the policy documented on WSOptions.AllowedOrigins.
func (h *wsHandler) originAllowed(r *http.Request) bool {
	vs := r.Header.Values("Origin")
	switch len(vs) {
	case 0:
		return true
	case 1:
	default:
		return false
	}
	origin := strings.ToLower(vs[0])
	if !validOrigin(origin) {
		// "null" (sandboxed pages, file: URLs) and junk: only an explicit
		// pattern lets them in.
		return slices.Contains(h.origins, origin) || slices.Contains(h.origins, "*")
	}
	if h.sameOrigin(r, origin) {
		return true
	}
	for _, p := range h.origins {
		if matchOrigin(p, origin) {
			return true
		}
	}
	return false
}

// sameOrigin applies the policy documented on WSOptions.PublicOrigins to a
// valid, lowercase origin.
func (h *wsHandler) sameOrigin(r *http.Request, origin string) bool {
	scheme, host, port, ok := originParts(origin)
	if !ok {
		return false
	}
	if slices.Contains(h.public, scheme+"://"+net.JoinHostPort(host, port)) {
		return true
	}
	// https on a plain listener (or http over TLS) is another origin.
	want := "http"
	if r.TLS != nil {
		want = "https"
	}
	if scheme != want {
		return false
	}
	local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
	if local == nil {
		return false
	}
	lap, err := netip.ParseAddrPort(local.String())
	if err != nil || strconv.Itoa(int(lap.Port())) != port {
		return false
	}
	lip := lap.Addr().Unmap()
	if ip, err := netip.ParseAddr(host); err == nil && ip.Unmap() == lip {
		// An address cannot be rebound: the page came from this address
		// and port, that is from this listener.
		return true
	}
	if host == "localhost" || strings.HasSuffix(host, ".localhost") {
		// Browsers resolve these to loopback only (RFC 6761).
		return lip.IsLoopback()
	}
	if r.TLS != nil && h.serverCert != nil {
		if c := h.serverCert(); c != nil && c.VerifyHostname(host) == nil {
			return true
		}
	}
	return false
}

// originParts splits a lowercase serialized origin into scheme, host
// (without brackets) and port, the scheme's default port when absent.
func originParts(origin string) (scheme, host, port string, ok bool) {
	scheme, hostport, ok := strings.Cut(origin, "://")
	if !ok || hostport == "" {
		return "", "", "", false
	}
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		// No port: the scheme's default.
		host, port = strings.TrimSuffix(strings.TrimPrefix(hostport, "["), "]"), ""
	}
	if port == "" {
		switch scheme {
		case "http", "ws":
			port = "80"
		case "https", "wss":
			port = "443"
		default:
			return "", "", "", false
		}
	}
	return scheme, host, port, host != ""
}

// validOrigin reports whether o is a serialized origin: scheme://host[:port]
// with nothing else.
func validOrigin(o string) bool {
	u, err := url.Parse(o)
	if err != nil {
		return false
	}
	return u.Scheme != "" && u.Host != "" && u.User == nil && u.Opaque == "" &&
		u.Path == "" && u.RawQuery == "" && u.Fragment == "" && !strings.HasSuffix(o, "?") &&
		!strings.HasSuffix(o, "#")
}

// matchOrigin matches origin against pattern, where '*' matches any run of
// characters except '/'; "*" alone matches everything. Both are lowercase.
func matchOrigin(pattern, origin string) bool {
	if pattern == "*" {
		return true
	}
	// Iterative glob with single-star backtracking: O(len(p)*len(o)).
	p, o := 0, 0
	starP, starO := -1, 0
	for o < len(origin) {
		switch {
		case p < len(pattern) && pattern[p] == '*':
			starP, starO = p, o
			p++
		case p < len(pattern) && pattern[p] == origin[o]:
			p++
			o++
		case starP >= 0 && origin[starO] != '/':
			starO++
			p, o = starP+1, starO
		default:
			return false
		}
	}
	for p < len(pattern) && pattern[p] == '*' {
		p++
	}
	return p == len(pattern)
}

// DialWS opens a WebSocket to url ("ws://" or "wss://") offering subprotocol
// (none if empty) and returns the client side of the adapter: Write sends
// masked binary frames. header is added to the handshake request (e.g.
// Origin). For tests and the load tool. DialWSConfig also takes a TLS
// configuration for wss.
func DialWS(ctx context.Context, url string, subprotocol string, header http.Header) (net.Conn, error) {
	return DialWSConfig(ctx, url, WSDialConfig{Subprotocol: subprotocol, Header: header})
}

// WSDialConfig configures DialWSConfig. The zero value offers no
// subprotocol and verifies a wss server against the system roots.
type WSDialConfig struct {
	// Subprotocol is offered to the server, which must select it; none if
	// empty.
	Subprotocol string
	// Header is added to the handshake request (e.g. Origin).
	Header http.Header
	// TLSConfig is used for wss:// URLs (nil: the defaults); its ServerName
	// defaults to the URL's host.
	TLSConfig *tls.Config
	// NetDial, if set, opens the TCP connection (e.g. to write a PROXY
	// header first); nil: a net.Dialer.
	NetDial func(ctx context.Context, network, addr string) (net.Conn, error)
	// Compression offers permessage-deflate without context takeover; the
	// conn compresses when the server accepts (WSConn.Compressed).
	// MaxMessageSize bounds a decompressed message from the server (0: none).
	Compression    bool
	MaxMessageSize int64
}

// DialWSConfig is DialWS with a WSDialConfig.
func DialWSConfig(ctx context.Context, url string, cfg WSDialConfig) (net.Conn, error) {
	d := ws.Dialer{TLSConfig: cfg.TLSConfig, NetDial: cfg.NetDial}
	subprotocol := cfg.Subprotocol
	if subprotocol != "" {
		d.Protocols = []string{subprotocol}
	}
	if len(cfg.Header) > 0 {
		d.Header = ws.HandshakeHeaderHTTP(cfg.Header)
	}
	if cfg.Compression {
		d.Extensions = []httphead.Option{deflateOffer}
	}
	conn, br, hs, err := d.Dial(ctx, url)
	if err != nil {
		return nil, fmt.Errorf("websocket: dial %s: %w", url, err)
	}
	var pre []byte
	if br != nil {
		b, _ := br.Peek(br.Buffered())
		pre = append([]byte(nil), b...)
		ws.PutReader(br)
	}
	if subprotocol != "" && hs.Protocol != subprotocol {
		_ = conn.Close()
		return nil, fmt.Errorf("websocket: dial %s: server selected subprotocol %q, want %q", url, hs.Protocol, subprotocol)
	}
	c := newWSConn(conn, pre, true, hs.Protocol)
	deflate, err := acceptedDeflate(hs.Extensions)
	if err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("websocket: dial %s: %w", url, err)
	}
	if deflate {
		c.enableDeflate(cfg.MaxMessageSize)
	}
	return c, nil
}

// WithRemoteAddr makes c report a as its RemoteAddr, e.g. the client address
// an HTTP layer found in trusted forwarding headers. A *WSConn is changed in
// place and returned (call it before the conn is shared between goroutines);
// any other conn is wrapped.
func WithRemoteAddr(c net.Conn, a net.Addr) net.Conn {
	if wc, ok := c.(*WSConn); ok {
		wc.remote = a
		return wc
	}
	return &addrConn{Conn: c, remote: a}
}

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c *addrConn) RemoteAddr() net.Addr { return c.remote }

// Unwrap returns the wrapped conn.
func (c *addrConn) Unwrap() net.Conn { return c.Conn }

// CloseCodeForReason maps an MQTT 5.0 DISCONNECT reason code (also the
// CONNACK codes >= 0x80) to the WebSocket close code sent with it:
//
//	0x00 normal, 0x04 with will, 0x8E session taken over   -> 1000 normal closure
//	0x8B server shutting down, 0x9C use another server,
//	0x9D server moved                                      -> 1001 going away
//	0x81 malformed, 0x82 protocol error, 0x93 receive
//	maximum exceeded, 0x94 topic alias invalid             -> 1002 protocol error
//	0x99 payload format invalid                            -> 1007 invalid payload data
//	0x86 bad credentials, 0x87 not authorized, 0x8A banned,
//	0x8C bad auth method, 0x90 topic name invalid, 0x96
//	message rate too high, 0x97 quota exceeded, 0x98
//	administrative action, 0x9A-0x9B, 0x9E, 0xA1, 0xA2
//	(features not supported)                               -> 1008 policy violation
//	0x95 packet too large                                  -> 1009 message too big
//	0x88 server unavailable, 0x89 server busy,
//	0x9F connection rate exceeded                          -> 1013 try again later
//	0x8D keep alive timeout                                -> 1000 (the peer is gone)
//	other codes >= 0x80 (0x80 unspecified, 0x83 ...)       -> 1011 internal error
//	other codes < 0x80                                     -> 1000
//
// 1005, 1006 and 1015 are never returned: RFC 6455 forbids sending them.
func CloseCodeForReason(mqttReason byte) uint16 {
	switch mqttReason {
	case 0x00, 0x04, 0x8E, 0x8D:
		return 1000
	case 0x8B, 0x9C, 0x9D:
		return 1001
	case 0x81, 0x82, 0x93, 0x94:
		return 1002
	case 0x99:
		return 1007
	case 0x86, 0x87, 0x8A, 0x8C, 0x90, 0x96, 0x97, 0x98, 0x9A, 0x9B, 0x9E, 0xA1, 0xA2:
		return 1008
	case 0x95:
		return 1009
	case 0x88, 0x89, 0x9F:
		return 1013
	}
	if mqttReason >= 0x80 {
		return 1011
	}
	return 1000
}

// isTimeout reports whether err is a deadline expiry, after which a Read may
// be retried.
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
