// Package starling embeds the Starling MQTT broker in a Go program.
//
//	srv, err := starling.New(starling.DefaultConfig())
//	if err != nil { ... }
//	go srv.Serve()
//	defer srv.Close()
package starling

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/starling-mqtt/starling/internal/admin"
	"github.com/starling-mqtt/starling/internal/auth"
	"github.com/starling-mqtt/starling/internal/bridge"
	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/cluster"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/limit"
	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/memory"
	"github.com/starling-mqtt/starling/internal/store/pebble"
	"github.com/starling-mqtt/starling/internal/transport"
)

// Config is the broker configuration; see DefaultConfig.
type Config = config.Config

// Limits are the protocol limits inside Config.
type Limits = config.Limits

// LatestValueRule gives subscriptions latest-value delivery (see
// Config.LatestValue).
type LatestValueRule = config.LatestValueRule

// DefaultConfig returns the embedded defaults (TCP 127.0.0.1:1883, HTTP
// 127.0.0.1:8080: loopback only; ./data).
func DefaultConfig() Config { return config.Default() }

// Option changes how New builds a server.
type Option func(*Server)

// WithVersion sets the version string the broker reports ($SYS, dashboard).
func WithVersion(v string) Option { return func(s *Server) { s.version = v } }

// WithLogger sets the logger; the default writes text to stderr at the
// configured level.
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithLogLevel gives the level variable of the logger set with WithLogger,
// so that the management API can change the level at runtime
// (PUT /api/v1/log-level). The default logger has one already; a server
// given its own logger without its level answers 501 there.
func WithLogLevel(v *slog.LevelVar) Option { return func(s *Server) { s.level = v } }

// Server is one broker instance. It is safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	level  *slog.LevelVar // nil: the level cannot be changed at runtime
	broker *broker.Broker
	store  store.Store
	// cluster is this node's membership; nil for a single node.
	cluster *cluster.Node
	auth    *auth.Auth
	refused *refusals     // counts and logs refused WebSocket upgrades and logins
	authn   Authenticator // WithAuthenticator; nil: auth
	authz   Authorizer    // WithAuthorizer; nil: auth
	admin   *admin.Admin
	// version is shown in $SYS and on the dashboard (WithVersion).
	version string
	// bridges connect to other brokers (Config.Bridges).
	bridges   *bridge.Set
	stopAdmin context.CancelFunc
	adminDone chan struct{}

	certs  *transport.CertReloader // nil without a TLS listener
	tlsCfg *tls.Config             // for mqtts and https; nil without them

	mu        sync.Mutex
	listeners []net.Listener
	httpSrvs  []*http.Server
	httpAddr  net.Addr
	httpsAddr net.Addr
	mqttsAddr net.Addr
	anyAddr   net.Addr
	sniffing  map[net.Conn]struct{} // listen_any connections not yet dispatched
	ready     chan struct{}         // closed once listeners are open (or failed)
	readyOnce sync.Once
	closed    bool
	accepting sync.WaitGroup
}

// New validates cfg, loads the TLS certificate and client CAs when mqtts or
// https is set, and builds a server; it opens no sockets until Serve.
func New(cfg Config, opts ...Option) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("starling: invalid config: %w", err)
	}
	s := &Server{cfg: cfg, ready: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	if s.log == nil {
		var lv slog.Level
		if err := lv.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
			lv = slog.LevelInfo
		}
		s.level = new(slog.LevelVar)
		s.level.Set(lv)
		s.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: s.level}))
	}
	// Client-supplied fields (client ID, user name, topic) are cut short in
	// every line, the embedder's logger included: see limit.Clip.
	s.log = slog.New(limit.Clip(s.log.Handler()))
	if cfg.MQTTS != "" || cfg.HTTPS != "" || (cfg.ListenAny != "" && cfg.TLS.CertFile != "") {
		if err := s.setupTLS(); err != nil {
			return nil, err
		}
	}
	s.broker = broker.New(cfg.Limits, s.log)
	s.broker.SetIdlePoll(cfg.IdlePoll)
	s.broker.SetFlow(cfg.SlowConsumer, cfg.LatestValue, cfg.Limits.MaxTotalQueuedBytes)
	a, err := auth.New(cfg.Auth, s.log)
	if err != nil {
		return nil, fmt.Errorf("starling: %w", err)
	}
	s.auth = a
	authn, authz := Authenticator(a), Authorizer(a)
	if s.authn != nil {
		authn = s.authn
	}
	if s.authz != nil {
		authz = s.authz
	}
	s.broker.SetAuth(authn, authz)
	s.broker.SetAuditLines(a.AuditLines()) // one log budget for refused clients
	if s.certs != nil {
		a.SetClientCAs(s.certs.ClientCAs) // certificate users are rechecked on reload
	}
	s.refused = newRefusals(a.AuditLines(), cfg.WebSocket.Paths)
	a.OnLoginFailed(s.refused.loginFailed)
	ao := admin.Options{Checker: a, Ready: s.serving, Version: s.version, Logger: s.log, LogLevel: s.level,
		Refusals: s.refused.alerts}
	al := cfg.Alerts
	ao.Alerts = &admin.AlertOptions{QueueFraction: al.QueueFraction, DroppedPerSecond: al.DroppedPerSecond, MaxConnections: al.MaxConnections,
		RefusedPerMinute: al.RefusedPerMinute, WebhookURL: al.WebhookURL, WebhookTimeout: al.WebhookTimeout}
	if cfg.Cluster.Name != "" {
		if cfg.Cluster.Node == "" {
			s.cfg.Cluster.Node = cluster.DefaultNodeName(cfg.Cluster.Listen)
		}
		ao.Node = s.cfg.Cluster.Node
		ao.Cluster = s.clusterStatus
		ao.ClusterOwners = s.clusterOwners
	}
	// Even without bridges: the set drops the sessions of removed ones.
	s.bridges = bridge.NewSet(cfg.Bridges, s.broker, s.log)
	ao.Bridges = func() any { return s.bridges.Status() }
	s.admin = admin.New(s.broker, ao)
	var reg prometheus.Registerer = s.admin.Metrics().Registry()
	if ao.Node != "" {
		reg = prometheus.WrapRegistererWith(prometheus.Labels{"node": ao.Node}, reg)
	}
	reg.MustRegister(s.refused)
	if st := a.HookStats(); st != nil {
		reg.MustRegister(hookCollector{st})
	}
	reg.MustRegister(s.bridges.Collector())
	s.refused.record = s.admin.RecordEvent
	return s, nil
}

// setupTLS loads the certificate and the client CAs for the TLS listeners.
func (s *Server) setupTLS() error {
	t := s.cfg.TLS
	certs, err := transport.NewCertReloader(t.CertFile, t.KeyFile)
	if err != nil {
		return fmt.Errorf("starling: tls.cert_file, tls.key_file: %w", err)
	}
	certs.OnReload = func(err error) {
		if err != nil {
			s.log.Error("certificate files changed but cannot be loaded; keeping the old certificate", "err", err)
			return
		}
		s.log.Info("certificate reloaded after the files changed", "cert_file", t.CertFile, "not_after", certs.Certificate().Leaf.NotAfter)
		// Called within a handshake: check the connected clients apart.
		go s.revoke("client certificate authorities reloaded")
	}
	s.tlsCfg, err = transport.ServerTLSConfig(certs, t.ClientCAFile, t.ClientAuth)
	if err != nil {
		return fmt.Errorf("starling: tls.client_ca_file: %w", err)
	}
	s.certs = certs
	return nil
}

// ReloadAuth reads the password and ACL files again; new rules apply to
// connected clients too (reads are checked per message), and a connected
// client whose user was deleted or whose password hash changed is
// disconnected (MQTT 5: DISCONNECT 0x87). On failure the old rules stay.
// The starling command calls it on SIGHUP.
func (s *Server) ReloadAuth() error {
	if err := s.auth.Reload(); err != nil {
		return fmt.Errorf("starling: reload auth: %w", err)
	}
	s.log.Info("password and ACL files reloaded")
	s.revoke("password file reloaded")
	return nil
}

// revoke disconnects the connected clients whose credentials no longer
// hold after a reload (broker.RevokeInvalid), and says how many.
func (s *Server) revoke(why string) {
	if n := s.broker.RevokeInvalid(); n > 0 {
		s.log.Warn("clients disconnected: credentials no longer valid", "count", n, "after", why)
	}
}

// ReloadCertificates reads tls.cert_file and tls.key_file again, and
// tls.client_ca_file when set: new TLS connections get the new certificate
// and have their client certificates checked against the new CAs; a
// connected client named by a certificate that no longer chains to them
// is disconnected (MQTT 5: DISCONNECT 0x87).
// On failure the old certificate stays in use. The starling command calls
// it on SIGHUP. It does nothing when no TLS listener is configured. (The
// files are also reloaded when they change, looked at during a handshake at
// most once per second.)
func (s *Server) ReloadCertificates() error {
	if s.certs == nil {
		return nil
	}
	if err := s.certs.Reload(); err != nil {
		return fmt.Errorf("starling: reload certificate: %w", err)
	}
	s.log.Info("certificate reloaded", "cert_file", s.cfg.TLS.CertFile, "not_after", s.certs.Certificate().Leaf.NotAfter)
	s.revoke("client certificate authorities reloaded")
	return nil
}

// Serve opens the configured listeners and serves until Close. It returns nil
// after Close, or the first listener error.
func (s *Server) Serve() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("starling: server closed")
	}
	// The store is loaded before any listener opens: clients find their
	// sessions as they were.
	err := s.openStore()
	if err == nil {
		// Before the listeners: a message published once clients can
		// connect finds the bridges' subscriptions in place.
		err = s.bridges.Start(10 * time.Second)
	}
	if err == nil && s.cfg.TCP != "" {
		_, err = s.listen("tcp", s.cfg.TCP, nil)
	}
	if err == nil && s.cfg.MQTTS != "" {
		s.mqttsAddr, err = s.listen("mqtts", s.cfg.MQTTS, s.tlsCfg)
	}
	if err == nil && s.cfg.HTTP != "" {
		s.httpAddr, err = s.listenHTTP("http", s.cfg.HTTP, nil)
	}
	if err == nil && s.cfg.HTTPS != "" {
		s.httpsAddr, err = s.listenHTTP("https", s.cfg.HTTPS, s.tlsCfg)
	}
	if err == nil && s.cfg.ListenAny != "" {
		s.anyAddr, err = s.listenAny("listen_any", s.cfg.ListenAny)
	}
	if err == nil {
		// $SYS tree and dashboard feeds, stopped by Close.
		ctx, cancel := context.WithCancel(context.Background())
		s.stopAdmin, s.adminDone = cancel, make(chan struct{})
		go func() { defer close(s.adminDone); s.admin.Run(ctx) }()
	}
	s.readyOnce.Do(func() { close(s.ready) })
	s.mu.Unlock()
	if err != nil {
		s.Close()
		return err
	}
	s.accepting.Wait()
	return nil
}

// serving reports readiness for /readyz: listeners open, store loaded, not
// closing, and in a cluster the replicated state usable (a majority of
// the nodes connected), so that a load balancer sends clients elsewhere.
func (s *Server) serving() bool {
	select {
	case <-s.ready:
	default:
		return false
	}
	s.mu.Lock()
	ok, node := !s.closed && len(s.listeners) > 0, s.cluster
	s.mu.Unlock()
	return ok && (node == nil || node.Health().Ready)
}

// listen opens one MQTT listener, over TLS when tlsCfg is not nil; the
// caller holds s.mu. The TLS handshake runs in the connection's goroutine,
// on its first read, bounded by the broker's connect timeout.
func (s *Server) listen(name, addr string, tlsCfg *tls.Config) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("starling: listen %s on %s: %w", name, addr, err)
	}
	s.listeners = append(s.listeners, ln)
	ln = s.proxyProtocol(name, ln)
	protocol := "mqtt"
	if tlsCfg != nil {
		protocol = "mqtt over tls"
		ln = tls.NewListener(ln, tlsCfg)
	}
	s.log.Info("listening", "listener", name, "addr", ln.Addr().String(), "protocol", protocol, "proxy_protocol", len(s.cfg.ProxyProtocolFor(name)) > 0)
	s.accepting.Add(1)
	go s.accept(ln, name)
	return ln.Addr(), nil
}

// proxyProtocol wraps ln so that the listener's PROXY protocol balancers
// (Config.ProxyProtocolFor) must send a PROXY header (read by the
// connection's first Read or RemoteAddr, in its own goroutine) and other
// peers must not; ln is returned as is when the listener has none.
func (s *Server) proxyProtocol(name string, ln net.Listener) net.Listener {
	trusted := s.cfg.ProxyProtocolFor(name)
	if len(trusted) == 0 {
		return ln
	}
	return &transport.ProxyListener{Listener: ln, Trusted: trusted, OnError: func(remote net.Addr, err error) {
		s.log.Warn("connection refused: PROXY protocol", "listener", name, "remote", remote.String(), "err", err)
	}}
}

func (s *Server) accept(ln net.Listener, name string) {
	defer s.accepting.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed {
				return
			}
			// Out of file descriptors and the like: back off, keep serving.
			s.log.Warn("accept failed", "addr", ln.Addr().String(), "err", err)
			time.Sleep(50 * time.Millisecond)
			continue
		}
		go s.broker.HandleConnOn(nc, name)
	}
}

// WSPath is the default path of MQTT over WebSocket on the HTTP listeners
// (Config.WebSocket.Paths).
const WSPath = "/mqtt"

// serverCert returns the current TLS certificate, nil without one.
func (s *Server) serverCert() *x509.Certificate {
	if s.certs == nil {
		return nil
	}
	if c := s.certs.Certificate(); c != nil {
		return c.Leaf
	}
	return nil
}

// wsMux serves MQTT over WebSocket at each configured path, matched exactly.
// name is the listener's, for the per-listener connection counts and
// anonymous access.
func (s *Server) wsMux(name string) *http.ServeMux {
	ws := s.cfg.WebSocket
	h := transport.NewWSHandler(transport.WSOptions{
		AllowNoSubprotocol: ws.AllowNoSubprotocol,
		AllowedOrigins:     ws.AllowedOrigins,
		PublicOrigins:      ws.PublicOrigins,
		ServerCert:         s.serverCert,
		TrustedProxies:     s.cfg.TrustedProxyPrefixes(),
		Compression:        ws.Compression,
		// A compressed message holds MQTT packets: it need not expand
		// beyond the largest packet accepted.
		MaxMessageSize: int64(s.cfg.Limits.MaxPacketSize),
		OnRefused:      s.refused.hook(name),
	}, func(c net.Conn, r *http.Request) {
		if j := s.cfg.Auth.JWT; j.Enabled() && (j.QueryParam || j.Cookie != "") {
			if wc, ok := c.(*transport.WSConn); ok {
				wc.SetHTTPToken(transport.RequestToken(r, j.QueryParam, j.Cookie))
			}
		}
		// Its own goroutine, so that the HTTP handler returns and the
		// server's per-request state (stack, request, headers) is freed
		// for the life of the WebSocket.
		go s.broker.HandleConnOn(c, name)
	})
	mux := http.NewServeMux()
	for _, p := range ws.Paths {
		if p == "/" {
			p = "/{$}" // only "/", not every path
		}
		mux.Handle(p, h) // Validate keeps out patterns and trailing slashes
	}
	// Everything else on the port: /metrics, /healthz, /readyz, /api/v1/
	// and the dashboard.
	mux.Handle("/", transport.WrongPathHandler(ws.Paths, s.refused.hook(name), s.admin.Handler()))
	return mux
}

// listenHTTP opens an HTTP listener, over TLS when tlsCfg is not nil: MQTT
// over WebSocket at the configured paths. The caller holds s.mu.
func (s *Server) listenHTTP(name, addr string, tlsCfg *tls.Config) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("starling: listen %s on %s: %w", name, addr, err)
	}
	ln = s.proxyProtocol(name, ln)
	srv := &http.Server{Handler: s.wsMux(name), ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	protocol := "mqtt over websocket"
	if tlsCfg != nil {
		// WebSocket needs HTTP/1.1 (a hijacked conn): offer no h2 by ALPN.
		tlsCfg = tlsCfg.Clone()
		tlsCfg.NextProtos = []string{"http/1.1"}
		if tlsCfg.GetConfigForClient != nil {
			// Reloaded client CAs, with this clone's settings.
			transport.ServeReloadedClientCAs(tlsCfg, s.certs)
		}
		srv.TLSConfig = tlsCfg
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
		protocol = "mqtt over secure websocket"
		ln = tls.NewListener(ln, tlsCfg)
	}
	s.httpSrvs = append(s.httpSrvs, srv)
	s.log.Info("listening", "listener", name, "addr", ln.Addr().String(), "protocol", protocol, "paths", s.cfg.WebSocket.Paths, "proxy_protocol", len(s.cfg.ProxyProtocolFor(name)) > 0)
	s.accepting.Add(1)
	go func() {
		defer s.accepting.Done()
		srv.Serve(ln)
	}()
	return ln.Addr(), nil
}

// listenAny opens the single-port listener: each connection is told by its
// first byte (transport.Sniff), in its own goroutine, within the connect
// timeout: MQTT goes to the broker, HTTP to an http.Server serving what the
// http listener serves, TLS (when a certificate is configured) is
// terminated and what is inside told the same way. The caller holds s.mu.
func (s *Server) listenAny(name, addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("starling: listen %s on %s: %w", name, addr, err)
	}
	s.listeners = append(s.listeners, ln)
	ln = s.proxyProtocol(name, ln)
	httpLn := transport.NewConnListener(ln.Addr())
	// HTTP sniffed inside TLS reaches the server on a wrapper, not a
	// *tls.Conn: ConnTLSContext and WithConnTLS give its requests r.TLS.
	srv := &http.Server{Handler: transport.WithConnTLS(s.wsMux(name)), ConnContext: transport.ConnTLSContext,
		ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	s.httpSrvs = append(s.httpSrvs, srv)
	var tlsCfg *tls.Config
	if s.tlsCfg != nil {
		// Inside TLS: MQTT, or HTTP/1.1 for WebSocket (no h2).
		tlsCfg = s.tlsCfg.Clone()
		tlsCfg.NextProtos = []string{"mqtt", "http/1.1"}
		if tlsCfg.GetConfigForClient != nil {
			transport.ServeReloadedClientCAs(tlsCfg, s.certs)
		}
	}
	s.log.Info("listening", "listener", name, "addr", ln.Addr().String(), "protocol", "mqtt, http and tls (sniffed)", "tls", tlsCfg != nil, "proxy_protocol", len(s.cfg.ProxyProtocolFor(name)) > 0)
	s.accepting.Add(2)
	go func() {
		defer s.accepting.Done()
		srv.Serve(httpLn)
	}()
	go func() {
		defer s.accepting.Done()
		defer httpLn.Close()
		for {
			nc, err := ln.Accept()
			if err != nil {
				s.mu.Lock()
				closed := s.closed
				s.mu.Unlock()
				if closed || errors.Is(err, net.ErrClosed) {
					return
				}
				s.log.Warn("accept failed", "addr", ln.Addr().String(), "err", err)
				time.Sleep(50 * time.Millisecond)
				continue
			}
			go s.dispatch(nc, tlsCfg, httpLn, true)
		}
	}()
	return ln.Addr(), nil
}

// dispatch sniffs nc and hands it to the broker or the HTTP server;
// outer is true for the raw connection, false inside TLS.
func (s *Server) dispatch(nc net.Conn, tlsCfg *tls.Config, httpLn *transport.ConnListener, outer bool) {
	if outer {
		// Until handed on, Close closes it.
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			nc.Close()
			return
		}
		if s.sniffing == nil {
			s.sniffing = map[net.Conn]struct{}{}
		}
		s.sniffing[nc] = struct{}{}
		s.mu.Unlock()
		defer func() { s.mu.Lock(); delete(s.sniffing, nc); s.mu.Unlock() }()
	}
	nc.SetReadDeadline(time.Now().Add(s.cfg.Limits.ConnectTimeout))
	kind, c, err := transport.Sniff(nc)
	if err != nil {
		nc.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	switch {
	case kind == transport.SniffMQTT:
		go s.broker.HandleConnOn(c, "listen_any") // returns now: no longer sniffing
	case kind == transport.SniffTLS && outer && tlsCfg != nil:
		tc := tls.Server(c, tlsCfg)
		tc.SetDeadline(time.Now().Add(s.cfg.Limits.ConnectTimeout))
		if err := tc.Handshake(); err != nil {
			s.log.Debug("TLS handshake failed", "listener", "listen_any", "remote", nc.RemoteAddr().String(), "err", err)
			nc.Close()
			return
		}
		tc.SetDeadline(time.Time{})
		// ALPN, when the client offered it, says what is inside; else the
		// first byte does.
		switch tc.ConnectionState().NegotiatedProtocol {
		case "mqtt":
			go s.broker.HandleConnOn(tc, "listen_any")
		case "http/1.1":
			httpLn.Put(tc)
		default:
			s.dispatch(tc, nil, httpLn, false)
		}
		return
	case kind == transport.SniffHTTP:
		httpLn.Put(c)
	default: // TLS without a certificate, or TLS inside TLS
		nc.Close()
	}
}

// readyAddr reads a listener address once Serve has opened the listeners.
func (s *Server) readyAddr(a *net.Addr) net.Addr {
	<-s.ready
	s.mu.Lock()
	defer s.mu.Unlock()
	return *a
}

// ListenAnyAddr returns the address of the single-port listener
// (Config.ListenAny) once Serve has opened it, or nil.
func (s *Server) ListenAnyAddr() net.Addr { return s.readyAddr(&s.anyAddr) }

// HTTPAddr returns the address of the HTTP listener once Serve has opened
// it, or nil.
func (s *Server) HTTPAddr() net.Addr { return s.readyAddr(&s.httpAddr) }

// HTTPSAddr returns the address of the HTTPS (secure WebSocket) listener
// once Serve has opened it, or nil.
func (s *Server) HTTPSAddr() net.Addr { return s.readyAddr(&s.httpsAddr) }

// MQTTSAddr returns the address of the MQTT over TLS listener once Serve
// has opened it, or nil.
func (s *Server) MQTTSAddr() net.Addr { return s.readyAddr(&s.mqttsAddr) }

// Addr returns the address of the first MQTT listener (tcp, else mqtts),
// once Serve has opened it (nil before, or if none is open).
func (s *Server) Addr() net.Addr {
	<-s.ready
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.listeners) == 0 {
		return nil
	}
	return s.listeners[0].Addr()
}

// Close stops accepting, tells MQTT 5 clients the server is shutting down
// (DISCONNECT 0x8B), closes every connection and waits for them, bounded by
// Config.ShutdownTimeout. In a cluster, the node stops confirming messages
// for its sessions before any client is disconnected, and answers the
// hand-overs of their sessions before it leaves (docs/cluster.md,
// "Stopping a node").
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.readyOnce.Do(func() { close(s.ready) }) // Addr callers waiting on a Serve that never ran
	for _, ln := range s.listeners {
		ln.Close()
	}
	for nc := range s.sniffing {
		nc.Close()
	}
	for _, srv := range s.httpSrvs {
		// Hijacked WebSocket connections belong to the broker, which closes
		// them below.
		srv.Close()
	}
	stopAdmin, adminDone := s.stopAdmin, s.adminDone
	node := s.cluster
	s.mu.Unlock()
	if node != nil {
		// Before any client is disconnected: see docs/cluster.md,
		// "Stopping a node".
		node.BeginShutdown()
	}
	if stopAdmin != nil {
		stopAdmin()
		<-adminDone
	}
	s.accepting.Wait()
	s.bridges.Close() // before the broker: their local sessions end cleanly
	s.broker.Close(s.cfg.ShutdownTimeout)
	s.auth.Close()
	if s.cluster != nil {
		s.cluster.Close()
	}
	var err error
	if s.store != nil {
		if err = s.store.Close(); err != nil {
			s.log.Error("store close failed", "err", err)
		}
	}
	s.log.Info("server stopped")
	return err
}

// openStore opens the configured store and loads the broker's state from
// it; the caller holds s.mu.
func (s *Server) openStore() error {
	var st store.Store
	switch s.cfg.Store {
	case "memory":
		st = memory.New()
	default:
		var err error
		st, err = pebble.Open(s.cfg.Data, pebble.Options{Sync: s.cfg.Sync, SyncInterval: s.cfg.SyncInterval, Logger: s.log})
		if err != nil {
			return fmt.Errorf("starling: open store in %s: %w", s.cfg.Data, err)
		}
	}
	s.store = st
	s.broker.SetStore(st)
	c := s.cfg.Cluster
	if c.Name != "" {
		// Plugged in before Restore (restored subscriptions announce
		// their interest, restored wills wait for the cluster), run only
		// after it: nothing from the other nodes may reach the broker
		// while its store is loading.
		dir := ""
		if s.cfg.Store != "memory" {
			dir = filepath.Join(s.cfg.Data, "cluster")
		}
		node, err := cluster.New(cluster.Config{Name: c.Name, Node: c.Node, Listen: c.Listen, Peers: c.Peers, Token: c.Token,
			LocalQueues: c.LocalQueues, DataDir: dir, MaxPayload: int(s.cfg.Limits.MaxPacketSize) + 64<<10, Logger: s.log}, s.broker)
		if err != nil {
			return fmt.Errorf("starling: %w", err)
		}
		s.cluster = node
	}
	if err := s.broker.Restore(); err != nil {
		return fmt.Errorf("starling: %w", err)
	}
	if s.cluster != nil {
		if err := s.cluster.Run(); err != nil {
			return fmt.Errorf("starling: %w", err)
		}
		prometheus.WrapRegistererWith(prometheus.Labels{"node": c.Node}, s.admin.Metrics().Registry()).MustRegister(s.cluster)
	}
	s.log.Info("store open", "store", s.cfg.Store, "data", s.cfg.Data, "sync", s.cfg.Sync)
	return nil
}

// ClusterReady is closed once a clustered server's replicated state is
// available (at once for a single node). It is for tests and readiness
// checks; Serve must have been called.
func (s *Server) ClusterReady() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cluster == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return s.cluster.Ready()
}

// ClusterHasInterest reports whether, as far as this node knows, any node
// of its cluster subscribes to topic name. False for a single node.
func (s *Server) ClusterHasInterest(name string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cluster != nil && s.cluster.HasInterest(name)
}

// clusterStatus is the admin view of this node's cluster; nil until Serve
// has started it.
func (s *Server) clusterStatus() *admin.ClusterStatus {
	s.mu.Lock()
	node := s.cluster
	s.mu.Unlock()
	if node == nil {
		return nil
	}
	h := node.Health()
	return &admin.ClusterStatus{Name: s.cfg.Cluster.Name, Node: node.Name(), Ready: h.Ready, Peers: h.Peers, Down: h.Down, Expected: len(s.cfg.Cluster.Peers) + 1}
}

// clusterOwners counts the sessions each cluster node owns; nil until
// Serve has started the node.
func (s *Server) clusterOwners() map[string]int {
	s.mu.Lock()
	node := s.cluster
	s.mu.Unlock()
	if node == nil {
		return nil
	}
	return node.SessionOwners()
}

// ClusterPeers lists the other cluster nodes this one is connected to now
// (nil for a single node).
func (s *Server) ClusterPeers() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cluster == nil {
		return nil
	}
	return s.cluster.Peers()
}

// BridgeStatus is the state of one bridge to another broker
// (Config.Bridges): connected, queued, sent, received, dropped, last error.
type BridgeStatus = bridge.Status

// Bridges returns the state of the configured bridges, in configuration
// order (also GET /api/v1/bridges, $SYS/broker/bridges/ and mqtt_bridge_*).
func (s *Server) Bridges() []BridgeStatus { return s.bridges.Status() }
