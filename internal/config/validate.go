package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"net/url"
	"path"
	"strconv"
	"strings"
	"unicode"

	"github.com/starling-mqtt/starling/internal/topic"
)

// Packet size bounds: the smallest limit that still fits a useful packet, and
// the largest packet MQTT can encode (a 4-byte remaining length of 268435455
// plus the 5-byte fixed header).
const (
	MinPacketSize = 16
	MaxPacketSize = 268435460
)

var logLevels = map[string]slog.Level{
	"debug": slog.LevelDebug,
	"info":  slog.LevelInfo,
	"warn":  slog.LevelWarn,
	"error": slog.LevelError,
}

// Validate checks every value and reports each bad one with its key path,
// e.g. "limits.max_qos: must be 0, 1 or 2 (got 3)", joined with errors.Join.
// It returns nil when c is usable.
func (c Config) Validate() error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &Error{Key: key, Msg: fmt.Sprintf(format, args...)})
	}

	listeners := []struct{ key, addr string }{{"tcp", c.TCP}, {"http", c.HTTP}, {"mqtts", c.MQTTS}, {"https", c.HTTPS}, {"listen_any", c.ListenAny}}
	for i, l := range listeners {
		if err := checkAddr(l.addr); err != nil {
			bad(l.key, "%v", err)
			continue
		}
		for _, prev := range listeners[:i] {
			if l.addr != "" && l.addr == prev.addr {
				if _, port, err := net.SplitHostPort(l.addr); err == nil && port != "0" {
					bad(l.key, "same address as %s (%q)", prev.key, l.addr)
					break
				}
			}
		}
	}
	if c.TCP == "" && c.HTTP == "" && c.MQTTS == "" && c.HTTPS == "" && c.ListenAny == "" {
		bad("tcp", `no listener enabled: set tcp, http, mqtts, https or listen_any`)
	}
	switch c.Store {
	case "pebble", "memory":
	default:
		bad("store", `must be "pebble" or "memory" (got %q)`, c.Store)
	}
	switch c.Sync {
	case "always", "interval", "none":
	default:
		bad("sync", `must be "always", "interval" or "none" (got %q)`, c.Sync)
	}
	if c.SyncInterval <= 0 {
		bad("sync_interval", "must be positive (got %s)", c.SyncInterval)
	}
	c.validateTLS(bad)
	c.validateCluster(bad)
	c.validateWebSocket(bad)
	for i, p := range c.TrustedProxies {
		if _, err := ParseTrustedProxy(p); err != nil {
			bad(fmt.Sprintf("trusted_proxies[%d]", i), "%v", err)
		}
	}
	for i, p := range c.ProxyProtocol {
		if _, err := ParseTrustedProxy(p); err != nil {
			bad(fmt.Sprintf("proxy_protocol[%d]", i), "%v", err)
		}
	}
	for _, l := range proxyListeners {
		for i, p := range *l.list(&c.ProxyProtocolListeners) {
			if _, err := ParseTrustedProxy(p); err != nil {
				bad(fmt.Sprintf("proxy_protocol_listeners.%s[%d]", l.name, i), "%v", err)
			}
		}
	}
	if _, ok := logLevels[c.LogLevel]; !ok {
		bad("log_level", "must be debug, info, warn or error (got %q)", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		bad("log_format", "must be text or json (got %q)", c.LogFormat)
	}
	if c.ShutdownTimeout <= 0 {
		bad("shutdown_timeout", "must be > 0 (got %v)", c.ShutdownTimeout)
	}

	l := c.Limits
	if l.MaxPacketSize < MinPacketSize || l.MaxPacketSize > MaxPacketSize {
		bad("limits.max_packet_size", "must be between %d and %d (got %d)", MinPacketSize, MaxPacketSize, l.MaxPacketSize)
	}
	if l.MaxInflight < 1 {
		bad("limits.max_inflight", "must be at least 1 (got %d)", l.MaxInflight)
	}
	if l.MaxQueued < 0 {
		bad("limits.max_queued_messages", "must be >= 0 (got %d)", l.MaxQueued)
	}
	if l.MaxQueuedBytes < 0 {
		bad("limits.max_queued_bytes", "must be >= 0 (got %d)", l.MaxQueuedBytes)
	}
	if l.MaxTotalQueuedBytes < 0 {
		bad("limits.max_total_queued_bytes", "must be >= 0 (got %d; 0 = no bound)", l.MaxTotalQueuedBytes)
	}
	if l.MemoryLimit < -1 {
		bad("limits.memory_limit", "must be -1 (none), 0 (derived) or a size in bytes (got %d)", l.MemoryLimit)
	}
	if l.GCPercent < -1 {
		bad("limits.gc_percent", "must be -1 (off), 0 (Go's default) or a percentage (got %d)", l.GCPercent)
	}
	if l.GCPercent == -1 && l.RuntimeMemoryLimit() <= 0 {
		bad("limits.gc_percent", "-1 (off) needs a memory limit: set limits.memory_limit or limits.max_total_queued_bytes")
	}
	if c.SlowConsumer.Timeout <= 0 {
		bad("slow_consumer.timeout", "must be > 0 (got %v)", c.SlowConsumer.Timeout)
	}
	switch c.SlowConsumer.Policy {
	case "disconnect", "drop_oldest", "drop_newest":
	default:
		bad("slow_consumer.policy", `must be "disconnect", "drop_oldest" or "drop_newest" (got %q)`, c.SlowConsumer.Policy)
	}
	if a := c.Alerts; a.QueueFraction < 0 || a.QueueFraction > 1 {
		bad("alerts.queue_fraction", "must be from 0 to 1 (got %v; 0 = off)", a.QueueFraction)
	}
	if c.Alerts.DroppedPerSecond < 0 {
		bad("alerts.dropped_per_second", "must be >= 0 (got %v; 0 = any drop)", c.Alerts.DroppedPerSecond)
	}
	if c.Alerts.MaxConnections < 0 {
		bad("alerts.max_connections", "must be >= 0 (got %d; 0 = off)", c.Alerts.MaxConnections)
	}
	if c.Alerts.RefusedPerMinute < 0 {
		bad("alerts.refused_per_minute", "must be >= 0 (got %d; 0 = off)", c.Alerts.RefusedPerMinute)
	}
	if w := c.Alerts.WebhookURL; w != "" {
		if u, err := url.Parse(w); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			bad("alerts.webhook_url", "must be an http or https URL (got %q)", w)
		}
	}
	if c.Alerts.WebhookTimeout <= 0 {
		bad("alerts.webhook_timeout", "must be > 0 (got %v)", c.Alerts.WebhookTimeout)
	}
	if c.SlowConsumer.MinRate < 0 {
		bad("slow_consumer.min_rate", "must be >= 0 (got %v; 0 = off)", c.SlowConsumer.MinRate)
	}
	for i, r := range c.LatestValue {
		if err := topic.ValidateFilter(r.Filter); err != nil {
			bad(fmt.Sprintf("latest_value[%d].filter", i), "%v", err)
		}
		switch r.Listener {
		case "", "tcp", "mqtts", "http", "https", "listen_any":
		default:
			bad(fmt.Sprintf("latest_value[%d].listener", i), `must be "", "tcp", "mqtts", "http", "https" or "listen_any" (got %q)`, r.Listener)
		}
	}
	errs = append(errs, validateBridges(c.Bridges)...)
	if l.MaxConnections < 0 {
		bad("limits.max_connections", "must be >= 0 (got %d; 0 = no limit)", l.MaxConnections)
	}
	if l.MaxSessionExpiry < 0 {
		bad("limits.max_session_expiry", "must be >= 0 (got %v; 0 = no cap)", l.MaxSessionExpiry)
	}
	if l.MaxQoS > 2 {
		bad("limits.max_qos", "must be 0, 1 or 2 (got %d)", l.MaxQoS)
	}
	if l.ConnectTimeout <= 0 {
		bad("limits.connect_timeout", "must be > 0 (got %v)", l.ConnectTimeout)
	}
	if l.PacketTimeout < 0 {
		bad("limits.packet_timeout", "must be >= 0 (got %v)", l.PacketTimeout)
	}
	if err := c.Auth.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := l.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ClientAuthModes are the values of tls.client_auth.
var ClientAuthModes = []string{"off", "optional", "required"}

func (c Config) validateTLS(bad func(key, format string, args ...any)) {
	var uses []string
	if c.MQTTS != "" {
		uses = append(uses, "mqtts")
	}
	if c.HTTPS != "" {
		uses = append(uses, "https")
	}
	if len(uses) > 0 {
		if c.TLS.CertFile == "" {
			bad("tls.cert_file", "required when %s is set", strings.Join(uses, " and "))
		}
		if c.TLS.KeyFile == "" {
			bad("tls.key_file", "required when %s is set", strings.Join(uses, " and "))
		}
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") && len(uses) == 0 {
		if c.TLS.CertFile == "" {
			bad("tls.cert_file", "required when tls.key_file is set")
		} else {
			bad("tls.key_file", "required when tls.cert_file is set")
		}
	}
	switch c.TLS.ClientAuth {
	case "off":
	case "optional", "required":
		if c.TLS.ClientCAFile == "" {
			bad("tls.client_ca_file", "required when tls.client_auth is %s", c.TLS.ClientAuth)
		}
	default:
		bad("tls.client_auth", "must be off, optional or required (got %q)", c.TLS.ClientAuth)
	}
}

func (c Config) validateWebSocket(bad func(key, format string, args ...any)) {
	ws := c.WebSocket
	if len(ws.Paths) == 0 && (c.HTTP != "" || c.HTTPS != "") {
		bad("websocket.paths", `must list at least one path, such as "/mqtt"`)
	}
	seen := map[string]bool{}
	for i, p := range ws.Paths {
		key := fmt.Sprintf("websocket.paths[%d]", i)
		switch {
		case !strings.HasPrefix(p, "/"):
			bad(key, `must start with "/" (got %q)`, p)
		case strings.ContainsAny(p, " \t{}?#") || strings.ContainsFunc(p, unicode.IsControl):
			bad(key, "must be a plain URL path without spaces, braces, '?' or '#' (got %q)", p)
		case path.Clean(p) != p:
			bad(key, "must be a clean path, such as %q (got %q)", path.Clean(p), p)
		case seen[p]:
			bad(key, "listed twice (%q)", p)
		}
		seen[p] = true
	}
	for i, o := range ws.AllowedOrigins {
		key := fmt.Sprintf("websocket.allowed_origins[%d]", i)
		_, host, hasScheme := strings.Cut(o, "://")
		switch {
		case o == "*" || o == "null":
		case !hasScheme || host == "":
			bad(key, `must be an origin such as "https://app.example.com", a pattern such as "https://*.example.com", or "*" (got %q)`, o)
		case strings.ContainsAny(host, "/?#"):
			bad(key, "must be scheme://host[:port], without a path (got %q)", o)
		}
	}
	for i, o := range ws.PublicOrigins {
		key := fmt.Sprintf("websocket.public_origins[%d]", i)
		scheme, host, _ := strings.Cut(o, "://")
		switch {
		case scheme != "http" && scheme != "https" || host == "":
			bad(key, `must be an http or https origin such as "https://broker.example.com" (got %q)`, o)
		case strings.ContainsAny(host, "/?#*@"):
			bad(key, "must be scheme://host[:port], without a path or '*' (got %q)", o)
		}
	}
}

// ParseTrustedProxy parses one entry of trusted_proxies or proxy_protocol: a CIDR such as
// "10.0.0.0/8" or a single address such as "192.0.2.1" or "::1". The
// prefix is returned masked, unmapped for IPv4-mapped IPv6 addresses.
func ParseTrustedProxy(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("must be a CIDR such as \"10.0.0.0/8\" or an address, without a zone (got %q)", s)
		}
		a = a.Unmap()
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("must be a CIDR such as \"10.0.0.0/8\" or \"fd00::/8\", or an address (got %q)", s)
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// TrustedProxyPrefixes returns TrustedProxies parsed; entries Validate
// would reject are left out.
func (c Config) TrustedProxyPrefixes() []netip.Prefix { return prefixes(c.TrustedProxies) }

// ProxyProtocolPrefixes returns ProxyProtocol parsed; entries Validate
// would reject are left out.
func (c Config) ProxyProtocolPrefixes() []netip.Prefix { return prefixes(c.ProxyProtocol) }

// proxyListeners names the fields of ProxyProtocolListeners.
var proxyListeners = []struct {
	name string
	list func(*ProxyProtocolListeners) *[]string
}{
	{"tcp", func(p *ProxyProtocolListeners) *[]string { return &p.TCP }},
	{"mqtts", func(p *ProxyProtocolListeners) *[]string { return &p.MQTTS }},
	{"http", func(p *ProxyProtocolListeners) *[]string { return &p.HTTP }},
	{"https", func(p *ProxyProtocolListeners) *[]string { return &p.HTTPS }},
	{"listen_any", func(p *ProxyProtocolListeners) *[]string { return &p.ListenAny }},
}

// ProxyProtocolFor returns the PROXY protocol balancers of the listener
// named listener ("tcp", "mqtts", "http", "https" or "listen_any"), parsed:
// its own list in ProxyProtocolListeners if not empty, else ProxyProtocol.
// Entries Validate would reject are left out.
func (c Config) ProxyProtocolFor(listener string) []netip.Prefix {
	for _, l := range proxyListeners {
		if l.name == listener {
			if own := *l.list(&c.ProxyProtocolListeners); len(own) > 0 {
				return prefixes(own)
			}
		}
	}
	return prefixes(c.ProxyProtocol)
}

func prefixes(list []string) []netip.Prefix {
	var out []netip.Prefix
	for _, s := range list {
		if p, err := ParseTrustedProxy(s); err == nil {
			out = append(out, p)
		}
	}
	return out
}

// checkAddr accepts "" (disabled) and host:port with a numeric port.
func checkAddr(addr string) error {
	if addr == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		why := err.Error()
		var ae *net.AddrError
		if errors.As(err, &ae) {
			why = ae.Err
		}
		return fmt.Errorf(`must be host:port such as ":1883" or "127.0.0.1:1883", or "" to disable (got %q: %s)`, addr, why)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Errorf("port must be a number from 0 to 65535 (got %q)", addr)
	}
	return nil
}

// SlogLevel returns LogLevel as a slog.Level: info when LogLevel is not one
// of debug, info, warn or error (Validate reports that).
func (c Config) SlogLevel() slog.Level {
	if l, ok := logLevels[c.LogLevel]; ok {
		return l
	}
	return slog.LevelInfo
}

func (c Config) validateCluster(bad func(key, format string, args ...any)) {
	cl := c.Cluster
	if cl.Name == "" {
		if cl.Listen != "" || len(cl.Peers) > 0 || cl.Node != "" {
			bad("cluster.name", "required when cluster.listen, cluster.peers or cluster.node is set")
		}
		return
	}
	if cl.Listen == "" {
		bad("cluster.listen", "required with cluster.name")
	} else if _, _, err := net.SplitHostPort(cl.Listen); err != nil {
		bad("cluster.listen", "%v", err)
	}
	if cl.Token != "" && len(cl.Token) < 16 {
		bad("cluster.token", "at least 16 characters (got %d)", len(cl.Token))
	}
	for i, p := range cl.Peers {
		if _, _, err := net.SplitHostPort(p); err != nil {
			bad(fmt.Sprintf("cluster.peers[%d]", i), "%v", err)
		}
	}
}
