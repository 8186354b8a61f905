package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// certCheckInterval is how often, at most, GetCertificate looks at the
// files' modification times.
const certCheckInterval = time.Second

// CertReloader serves a certificate and key loaded from PEM files through
// tls.Config.GetCertificate, and loads them again on demand (Reload) or when
// either file's modification time or size changes. The files are looked at
// during a handshake, at most once per second; there is no background
// goroutine. A reload that fails keeps the certificate already loaded, so a
// half-written file never takes the listener down. Connections already
// established keep the certificate they were made with.
//
// A CertReloader is safe for concurrent use once OnReload is set.
type CertReloader struct {
	certFile, keyFile string

	// OnReload, if set, is called after each reload triggered by a file
	// change (not by Reload, whose caller gets the error): err is nil when
	// the new certificate is in use, else the reason the old one is kept.
	// Set it before the reloader is shared; it runs in the handshake's
	// goroutine.
	OnReload func(err error)

	cert      atomic.Pointer[tls.Certificate]
	lastCheck atomic.Int64 // unix nanoseconds of the last look at the files
	now       func() time.Time

	mu   sync.Mutex // serializes loads; guards seen
	seen [2]fileStamp
}

// fileStamp is what tells a changed file from the one loaded.
type fileStamp struct {
	mod  time.Time
	size int64
}

// NewCertReloader loads certFile and keyFile (PEM; the certificate file may
// hold intermediates after the leaf) and returns a reloader serving them.
func NewCertReloader(certFile, keyFile string) (*CertReloader, error) {
	r := &CertReloader{certFile: certFile, keyFile: keyFile, now: time.Now}
	if err := r.Reload(); err != nil {
		return nil, err
	}
	return r, nil
}

// Reload reads the files again. On success new handshakes get the new
// certificate; on failure the previous one stays in use and the error says
// why.
func (r *CertReloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loadLocked()
}

// loadLocked loads the files; the caller holds r.mu. The files are looked at
// before they are read, so a change during the read is seen next time.
func (r *CertReloader) loadLocked() error {
	r.seen = [2]fileStamp{stamp(r.certFile), stamp(r.keyFile)}
	r.lastCheck.Store(r.now().UnixNano())
	c, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("tls: load certificate %s and key %s: %w", r.certFile, r.keyFile, err)
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return fmt.Errorf("tls: parse certificate %s: %w", r.certFile, err)
		}
	}
	r.cert.Store(&c)
	return nil
}

func stamp(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{fi.ModTime(), fi.Size()}
}

// Certificate returns the certificate in use.
func (r *CertReloader) Certificate() *tls.Certificate { return r.cert.Load() }

// GetCertificate is for tls.Config.GetCertificate: it returns the
// certificate in use, after reloading it if the files changed (looked at no
// more than once per second).
func (r *CertReloader) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	now := r.now()
	last := r.lastCheck.Load()
	if now.UnixNano()-last >= int64(certCheckInterval) && r.lastCheck.CompareAndSwap(last, now.UnixNano()) {
		r.reloadIfChanged()
	}
	return r.cert.Load(), nil
}

func (r *CertReloader) reloadIfChanged() {
	if !r.mu.TryLock() { // a reload is under way: serve what is loaded
		return
	}
	defer r.mu.Unlock()
	if stamp(r.certFile) == r.seen[0] && stamp(r.keyFile) == r.seen[1] {
		return
	}
	err := r.loadLocked()
	if r.OnReload != nil {
		r.OnReload(err)
	}
}

// Client-authentication modes of ServerTLSConfig.
const (
	ClientAuthOff      = "off"
	ClientAuthOptional = "optional"
	ClientAuthRequired = "required"
)

// ServerTLSConfig returns a server configuration that serves r's certificate
// with TLS 1.2 at least. clientAuth is "off" (or ""): no client certificate
// asked for; "optional": a client certificate, if sent, must chain to a CA
// in clientCA; "required": a client without such a certificate fails the
// handshake. clientCA is a PEM file of CA certificates, needed by optional
// and required. NextProtos is left empty: set it on a clone (e.g.
// "http/1.1" for WebSocket, which cannot run over HTTP/2).
func ServerTLSConfig(r *CertReloader, clientCA string, clientAuth string) (*tls.Config, error) {
	if r == nil {
		return nil, errors.New("tls: no certificate")
	}
	cfg := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: r.GetCertificate,
	}
	switch clientAuth {
	case "", ClientAuthOff:
		cfg.ClientAuth = tls.NoClientCert
	case ClientAuthOptional:
		cfg.ClientAuth = tls.VerifyClientCertIfGiven
	case ClientAuthRequired:
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	default:
		return nil, fmt.Errorf("tls: client auth must be off, optional or required (got %q)", clientAuth)
	}
	if clientCA != "" {
		pemData, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, fmt.Errorf("tls: client CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("tls: client CA %s: no PEM certificate found", clientCA)
		}
		cfg.ClientCAs = pool
	} else if cfg.ClientAuth != tls.NoClientCert {
		return nil, fmt.Errorf("tls: client auth %s needs a client CA file", clientAuth)
	}
	return cfg, nil
}
