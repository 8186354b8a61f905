package main

import (
	"log/slog"
	"net"
	"net/netip"

	"github.com/starling-mqtt/starling/internal/config"
)

// openDoor is a listener other machines may reach where anyone may connect
// without credentials and, without an ACL, read and publish every topic.
type openDoor struct {
	listener, addr string
}

// openDoors lists the enabled listeners of cfg that are reachable beyond
// loopback while anonymous clients are let in on them and no ACL is set.
func openDoors(cfg config.Config) []openDoor {
	if cfg.Auth.ACLFile != "" {
		return nil
	}
	var doors []openDoor
	for _, l := range []struct{ name, addr string }{{"tcp", cfg.TCP}, {"http", cfg.HTTP},
		{"mqtts", cfg.MQTTS}, {"https", cfg.HTTPS}, {"listen_any", cfg.ListenAny}} {
		if l.addr != "" && !loopbackOnly(l.addr) && cfg.Auth.AnonymousAllowed(l.name) {
			doors = append(doors, openDoor{l.name, l.addr})
		}
	}
	return doors
}

// loopbackOnly reports whether a listener on addr accepts only
// connections from this machine: a loopback address, or a host name whose
// every address is one. An empty host is every interface.
func loopbackOnly(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().IsLoopback()
	}
	if host == "localhost" {
		return true
	}
	ips, err := net.LookupIP(host)
	if err != nil || len(ips) == 0 {
		return false
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return false
		}
	}
	return true
}

// warnOpenDoors logs one warning per open door, and says so when every
// listener is local only, as it is by default.
func warnOpenDoors(log *slog.Logger, cfg config.Config) {
	doors := openDoors(cfg)
	for _, d := range doors {
		log.Warn("listener open to other machines with anonymous access and no ACL: anyone who reaches it may read and publish every topic, $SYS included",
			"listener", d.listener, "addr", d.addr,
			"fix", "set auth.allow_anonymous: false with auth.password_file, set auth.acl_file, or bind it to 127.0.0.1 (docs/security.md)")
	}
	if c := cfg.Cluster; c.Listen != "" && c.Token == "" && !loopbackOnly(c.Listen) {
		log.Warn("cluster port open to other machines without cluster.token: anyone who reaches it may join the cluster",
			"addr", c.Listen, "fix", "set cluster.token, or keep the port on a private network (docs/cluster.md)")
	}
	if len(doors) == 0 && allLoopback(cfg) {
		log.Info("listening on loopback only: other machines cannot connect; set tcp and http (\":1883\", \":8080\") to accept them")
	}
}

// allLoopback reports whether every enabled listener is loopback only.
func allLoopback(cfg config.Config) bool {
	for _, addr := range []string{cfg.TCP, cfg.HTTP, cfg.MQTTS, cfg.HTTPS, cfg.ListenAny} {
		if addr != "" && !loopbackOnly(addr) {
			return false
		}
	}
	return true
}
