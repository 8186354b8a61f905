// Package starling embeds the Starling MQTT broker in a Go program.
//
//	srv, err := starling.New(starling.DefaultConfig())
//	if err != nil { ... }
//	go srv.Serve()
//	defer srv.Close()
package starling

import (
	"log/slog"

	"github.com/starling-mqtt/starling/internal/config"
)

// Config is the broker configuration; see DefaultConfig.
type Config = config.Config

// Limits are the protocol limits inside Config.
type Limits = config.Limits

// DefaultConfig returns the embedded defaults (TCP :1883, HTTP :8080, ./data).
func DefaultConfig() Config { return config.Default() }

// Option changes how New builds a server.
type Option func(*Server)

// WithLogger sets the logger; the default discards nothing and writes text to
// stderr at the configured level.
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// Server is one broker instance. It is safe for concurrent use.
type Server struct {
	cfg Config
	log *slog.Logger
}

// New validates cfg and builds a server; it opens no sockets until Serve.
func New(cfg Config, opts ...Option) (*Server, error) {
	panic("TODO")
}

// Serve opens the configured listeners and serves until Close. It returns nil
// after Close, or the first listener error.
func (s *Server) Serve() error { panic("TODO") }

// Close stops accepting, tells MQTT 5 clients the server is shutting down
// (DISCONNECT 0x8B), closes every connection and waits for them, bounded by
// Config.ShutdownTimeout.
func (s *Server) Close() error { panic("TODO") }
