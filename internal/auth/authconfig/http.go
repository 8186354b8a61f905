package authconfig

import (
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"
)

// HTTP configures the HTTP authentication hook (auth.http): the broker
// POSTs each CONNECT (and, with Authorize, each publish and subscription
// of the clients it let in) as JSON to the application's backend, which
// answers allow, deny or ignore. On when URL is set.
type HTTP struct {
	// URL is the backend's http:// or https:// endpoint. Credentials for
	// the backend itself go in the URL's user info
	// (https://broker:secret@app.example.com/mqtt-auth), sent as HTTP
	// Basic authentication.
	URL string `yaml:"url"`
	// Timeout bounds one call, connecting included (0: 2s). A call that
	// has not answered by then is a failure (see OnError).
	Timeout time.Duration `yaml:"timeout"`
	// OnError decides what a failed call means (unreachable backend,
	// timeout, a status other than 200, 204, 401 and 403, an unreadable
	// answer): "deny" (the default) refuses the client, CONNACK 0x88
	// server unavailable (3.x: 3) or a refused publish or subscription;
	// "next" lets the next authenticator of auth.order decide, as if the
	// backend had answered ignore.
	OnError string `yaml:"on_error"`
	// CacheSize bounds the answers kept (least recently used first out);
	// 0: no cache.
	CacheSize int `yaml:"cache_size"`
	// AllowTTL is how long an allow is reused for the same request; 0:
	// allows are not cached.
	AllowTTL time.Duration `yaml:"allow_ttl"`
	// DenyTTL is how long a deny (or ignore) is reused; 0: not cached.
	DenyTTL time.Duration `yaml:"deny_ttl"`
	// Authorize also asks the backend about each publish topic and
	// subscription filter of the clients it let in (not the deliveries:
	// a granted subscription receives what it matches). Off: the hook
	// decides only CONNECTs, and the ACL file (or the lists the backend
	// returned) what clients do.
	Authorize bool `yaml:"authorize"`
}

// DefaultHTTP returns the defaults documented on each HTTP field.
func DefaultHTTP() HTTP {
	return HTTP{Timeout: 2 * time.Second, OnError: OnErrorDeny, CacheSize: 10000, AllowTTL: time.Minute, DenyTTL: 10 * time.Second}
}

// Values of HTTP.OnError.
const (
	OnErrorDeny = "deny"
	OnErrorNext = "next"
)

// Enabled reports whether the hook is on.
func (h HTTP) Enabled() bool { return h.URL != "" }

// CallTimeout returns Timeout, with 0 read as 2s.
func (h HTTP) CallTimeout() time.Duration {
	if h.Timeout > 0 {
		return h.Timeout
	}
	return 2 * time.Second
}

func (h HTTP) validate() []error {
	var errs []error
	bad := func(key, format string, args ...any) {
		errs = append(errs, &FieldError{Key: "auth.http." + key, Msg: fmt.Sprintf(format, args...)})
	}
	if h.URL != "" {
		u, err := url.Parse(h.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("url", "must be an http:// or https:// URL")
		}
	}
	if h.Timeout < 0 || h.Timeout > time.Minute {
		bad("timeout", "must be between 0 and 1m (got %s)", h.Timeout)
	}
	switch h.OnError {
	case "", OnErrorDeny, OnErrorNext:
	default:
		bad("on_error", "must be deny or next (got %q)", h.OnError)
	}
	if h.CacheSize < 0 {
		bad("cache_size", "must be >= 0 (got %d)", h.CacheSize)
	}
	if h.AllowTTL < 0 {
		bad("allow_ttl", "must be >= 0 (got %s)", h.AllowTTL)
	}
	if h.DenyTTL < 0 {
		bad("deny_ttl", "must be >= 0 (got %s)", h.DenyTTL)
	}
	if !h.Enabled() && h.Authorize {
		bad("url", "auth.http.authorize is set but no url")
	}
	return errs
}

// Authenticators that auth.order names.
const (
	AuthPasswordFile = "password_file"
	AuthJWT          = "jwt"
	AuthHTTP         = "http"
	AuthAnonymous    = "anonymous"
)

// DefaultOrder is the order of authenticators when auth.order is empty.
var DefaultOrder = []string{AuthPasswordFile, AuthJWT, AuthHTTP, AuthAnonymous}

// AuthOrder returns Order, or DefaultOrder when it is empty.
func (c Config) AuthOrder() []string {
	if len(c.Order) > 0 {
		return c.Order
	}
	return DefaultOrder
}

// configured reports whether the named authenticator has its keys set.
func (c Config) configured(name string) bool {
	switch name {
	case AuthPasswordFile:
		return c.PasswordFile != ""
	case AuthJWT:
		return c.JWT.Enabled()
	case AuthHTTP:
		return c.HTTP.Enabled()
	case AuthAnonymous:
		return c.AllowAnonymous || len(c.AnonymousListeners) > 0
	}
	return false
}

func (c Config) validateOrder() []error {
	var errs []error
	for i, n := range c.Order {
		switch {
		case !slices.Contains(DefaultOrder, n):
			errs = append(errs, &FieldError{Key: fmt.Sprintf("auth.order[%d]", i),
				Msg: fmt.Sprintf("must be one of %s (got %q)", strings.Join(DefaultOrder, ", "), n)})
		case slices.Index(c.Order, n) != i:
			errs = append(errs, &FieldError{Key: fmt.Sprintf("auth.order[%d]", i), Msg: n + " is listed twice"})
		}
	}
	if len(c.Order) > 0 {
		for _, n := range DefaultOrder {
			if c.configured(n) && !slices.Contains(c.Order, n) {
				fix := "add it or remove its keys"
				if n == AuthAnonymous {
					fix = "add it or set auth.allow_anonymous: false (and no auth.anonymous_listeners)"
				}
				errs = append(errs, &FieldError{Key: "auth.order",
					Msg: fmt.Sprintf("%s is configured but not listed, so it would never be asked; %s", n, fix)})
			}
		}
	}
	return errs
}
