// Package starling embeds the Starling MQTT broker in a Go program.
//
//	srv, err := starling.New(starling.DefaultConfig())
//	if err != nil { ... }
//	go srv.Serve()
//	defer srv.Close()
package starling

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/transport"
)

// Config is the broker configuration; see DefaultConfig.
type Config = config.Config

// Limits are the protocol limits inside Config.
type Limits = config.Limits

// DefaultConfig returns the embedded defaults (TCP :1883, HTTP :8080, ./data).
func DefaultConfig() Config { return config.Default() }

// Option changes how New builds a server.
type Option func(*Server)

// WithLogger sets the logger; the default writes text to stderr at the
// configured level.
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// Server is one broker instance. It is safe for concurrent use.
type Server struct {
	cfg    Config
	log    *slog.Logger
	broker *broker.Broker

	mu        sync.Mutex
	listeners []net.Listener
	httpSrv   *http.Server
	httpAddr  net.Addr
	ready     chan struct{} // closed once listeners are open (or failed)
	readyOnce sync.Once
	closed    bool
	accepting sync.WaitGroup
}

// New validates cfg and builds a server; it opens no sockets until Serve.
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
		s.log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lv}))
	}
	s.broker = broker.New(cfg.Limits, s.log)
	return s, nil
}

// Serve opens the configured listeners and serves until Close. It returns nil
// after Close, or the first listener error.
func (s *Server) Serve() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("starling: server closed")
	}
	var err error
	if s.cfg.TCP != "" {
		err = s.listen("tcp", s.cfg.TCP)
	}
	if err == nil && s.cfg.HTTP != "" {
		err = s.listenHTTP(s.cfg.HTTP)
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

// listen opens one MQTT listener; the caller holds s.mu.
func (s *Server) listen(name, addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("starling: listen %s on %s: %w", name, addr, err)
	}
	s.listeners = append(s.listeners, ln)
	s.log.Info("listening", "listener", name, "addr", ln.Addr().String(), "protocol", "mqtt")
	s.accepting.Add(1)
	go s.accept(ln)
	return nil
}

func (s *Server) accept(ln net.Listener) {
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
		go s.broker.HandleConn(nc)
	}
}

// WSPath is where MQTT over WebSocket is served on the HTTP listener.
const WSPath = "/mqtt"

// listenHTTP opens the HTTP listener: MQTT over WebSocket at WSPath. The
// caller holds s.mu.
func (s *Server) listenHTTP(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("starling: listen http on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle(WSPath, transport.NewWSHandler(transport.WSOptions{}, func(c net.Conn, _ *http.Request) {
		s.broker.HandleConn(c)
	}))
	s.httpSrv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug)}
	s.httpAddr = ln.Addr()
	s.log.Info("listening", "listener", "http", "addr", ln.Addr().String(), "protocol", "mqtt over websocket", "path", WSPath)
	s.accepting.Add(1)
	go func() {
		defer s.accepting.Done()
		s.httpSrv.Serve(ln)
	}()
	return nil
}

// HTTPAddr returns the address of the HTTP listener once Serve has opened
// it, or nil.
func (s *Server) HTTPAddr() net.Addr {
	<-s.ready
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.httpAddr
}

// Addr returns the address of the first listener, once Serve has opened it
// (nil before, or if none is open).
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
// Config.ShutdownTimeout.
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
	if s.httpSrv != nil {
		// Hijacked WebSocket connections belong to the broker, which closes
		// them below.
		s.httpSrv.Close()
	}
	s.mu.Unlock()
	s.accepting.Wait()
	s.broker.Close(s.cfg.ShutdownTimeout)
	s.log.Info("server stopped")
	return nil
}
