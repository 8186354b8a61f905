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
	caFile            string // client CA file, "" for none (set by ServerTLSConfig)

	// OnReload, if set, is called after each reload triggered by a file
	// change (not by Reload, whose caller gets the error): err is nil when
	// the new certificate is in use, else the reason the old one is kept.
	// Set it before the reloader is shared; it runs in the handshake's
	// goroutine.
	OnReload func(err error)

	cert      atomic.Pointer[tls.Certificate]
	clientCAs atomic.Pointer[x509.CertPool] // from caFile; nil without
	lastCheck atomic.Int64                  // unix nanoseconds of the last look at the files
	now       func() time.Time

	mu   sync.Mutex   // serializes loads; guards seen and caFile
	seen [3]fileStamp // certFile, keyFile, caFile
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

// Reload reads the files again, the client CA file too when ServerTLSConfig
// was given one. On success new handshakes get the new certificate and
// client CAs; on failure the previous ones stay in use (all of them: a
// certificate is never paired with a half-loaded CA file) and the error says
// why.
func (r *CertReloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.loadLocked()
}

// loadLocked loads the files; the caller holds r.mu. The files are looked at
// before they are read, so a change during the read is seen next time.
func (r *CertReloader) loadLocked() error {
	r.seen = [3]fileStamp{stamp(r.certFile), stamp(r.keyFile), stamp(r.caFile)}
	r.lastCheck.Store(r.now().UnixNano())
	var pool *x509.CertPool
	if r.caFile != "" {
		var err error
		if pool, err = loadCAPool(r.caFile); err != nil {
			return err
		}
	}
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
	if pool != nil {
		r.clientCAs.Store(pool)
	}
	return nil
}

// loadCAPool reads a PEM file of CA certificates.
func loadCAPool(path string) (*x509.CertPool, error) {
	pemData, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("tls: client CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemData) {
		return nil, fmt.Errorf("tls: client CA %s: no PEM certificate found", path)
	}
	return pool, nil
}

// setClientCAFile makes path part of what r loads, and loads it (with the
// certificate) now.
func (r *CertReloader) setClientCAFile(path string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	old := r.caFile
	r.caFile = path
	if err := r.loadLocked(); err != nil {
		r.caFile = old
		return err
	}
	return nil
}

// ClientCAs returns the client CA pool in use: nil unless ServerTLSConfig
// was given a client CA file.
func (r *CertReloader) ClientCAs() *x509.CertPool { return r.clientCAs.Load() }

func stamp(path string) fileStamp {
	if path == "" {
		return fileStamp{}
	}
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
	r.checkFiles()
	return r.cert.Load(), nil
}

// checkFiles reloads the files if they changed, looking at them no more than
// once per second.
func (r *CertReloader) checkFiles() {
	now := r.now()
	last := r.lastCheck.Load()
	if now.UnixNano()-last >= int64(certCheckInterval) && r.lastCheck.CompareAndSwap(last, now.UnixNano()) {
		r.reloadIfChanged()
	}
}

func (r *CertReloader) reloadIfChanged() {
	if !r.mu.TryLock() { // a reload is under way: serve what is loaded
		return
	}
	defer r.mu.Unlock()
	if stamp(r.certFile) == r.seen[0] && stamp(r.keyFile) == r.seen[1] && stamp(r.caFile) == r.seen[2] {
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
// and required; it is reloaded with the certificate (Reload, or a change of
// the files). NextProtos is left empty: set it on a clone (e.g. "http/1.1"
// for WebSocket, which cannot run over HTTP/2), and pass the clone to
// ServeReloadedClientCAs so that it keeps the clone's settings once the
// client CAs change.
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
		if err := r.setClientCAFile(clientCA); err != nil {
			return nil, err
		}
		cfg.ClientCAs = r.ClientCAs()
		ServeReloadedClientCAs(cfg, r)
	} else if cfg.ClientAuth != tls.NoClientCert {
		return nil, fmt.Errorf("tls: client auth %s needs a client CA file", clientAuth)
	}
	return cfg, nil
}

// ServeReloadedClientCAs sets cfg.GetConfigForClient so that each handshake
// verifies client certificates against r's client CAs as they are now
// (after a Reload or a change of the files), not as they were when cfg was
// made. While the CAs are those in cfg.ClientCAs, cfg is used as it is;
// after a change, a clone of cfg with the new pool (made once per change).
// ServerTLSConfig calls it; call it again on a clone of its result, or the
// clone's handshakes would use the original's settings after a change.
func ServeReloadedClientCAs(cfg *tls.Config, r *CertReloader) {
	type derived struct {
		pool *x509.CertPool
		cfg  *tls.Config
	}
	var cache atomic.Pointer[derived]
	cfg.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		r.checkFiles()
		pool := r.ClientCAs()
		if pool == nil || pool == cfg.ClientCAs {
			return nil, nil
		}
		if d := cache.Load(); d != nil && d.pool == pool {
			return d.cfg, nil
		}
		c := cfg.Clone()
		c.GetConfigForClient = nil
		c.ClientCAs = pool
		cache.Store(&derived{pool, c})
		return c, nil
	}
}
