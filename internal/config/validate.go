package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
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

	for _, l := range []struct{ key, addr string }{{"tcp", c.TCP}, {"http", c.HTTP}} {
		if err := checkAddr(l.addr); err != nil {
			bad(l.key, "%v", err)
		}
	}
	switch {
	case c.TCP == "" && c.HTTP == "":
		bad("tcp", `no listener enabled: set tcp or http (or both)`)
	case c.TCP == c.HTTP:
		if _, port, err := net.SplitHostPort(c.HTTP); err == nil && port != "0" {
			bad("http", "same address as tcp (%q)", c.HTTP)
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
	return errors.Join(errs...)
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
