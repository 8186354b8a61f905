// Package httpauth asks an application's backend whether a client may
// connect, publish or subscribe: it POSTs the request as JSON to a URL and
// reads allow, deny or ignore back, with a timeout and a bounded cache of
// the answers. See docs/security.md, "HTTP authentication hook".
package httpauth

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/starling-mqtt/starling/internal/auth/authconfig"
)

// Actions a Request asks about.
const (
	ActionConnect   = "connect"
	ActionPublish   = "publish"
	ActionSubscribe = "subscribe"
)

// Results of an Answer.
const (
	Allow  = "allow"
	Deny   = "deny"
	Ignore = "ignore" // no opinion: the next authenticator decides
)

// Request is the JSON body POSTed to the backend.
type Request struct {
	Action   string `json:"action"` // connect, publish or subscribe
	ClientID string `json:"client_id"`
	Username string `json:"username"`
	// Password is the CONNECT password (connect only), when it is UTF-8;
	// another one is in PasswordBase64.
	Password       string `json:"password,omitempty"`
	PasswordBase64 string `json:"password_base64,omitempty"`
	// Token is a bearer token from the WebSocket upgrade request
	// (auth.jwt.query_param or cookie), when CONNECT has no password.
	Token    string `json:"token,omitempty"`
	Remote   string `json:"remote"`   // the client's real address, host:port
	Listener string `json:"listener"` // tcp, mqtts, http, https, listen_any
	// ProtocolVersion is 3, 4 (3.1.1) or 5 (connect only).
	ProtocolVersion byte `json:"protocol_version,omitempty"`
	// Topic is the topic name (publish) or filter (subscribe).
	Topic string `json:"topic,omitempty"`
}

// SetPassword puts p in Password, or in PasswordBase64 when it is not
// UTF-8 (JSON strings cannot carry arbitrary bytes).
func (r *Request) SetPassword(p []byte) {
	if utf8.Valid(p) {
		r.Password = string(p)
	} else {
		r.PasswordBase64 = base64.StdEncoding.EncodeToString(p)
	}
}

// Answer is the backend's JSON answer (status 200).
type Answer struct {
	Result string `json:"result"` // allow, deny or ignore
	// Username, when set on an allowed connect, replaces the CONNECT
	// user name (for the ACL file and superusers).
	Username  string `json:"username,omitempty"`
	Superuser bool   `json:"superuser,omitempty"`
	// Publish and Subscribe, when either is present on an allowed
	// connect, are the client's own topic patterns (with %u and %c); a
	// missing one then allows nothing of its kind.
	Publish   []string `json:"publish,omitempty"`
	Subscribe []string `json:"subscribe,omitempty"`
}

// maxAnswer bounds the body read from the backend.
const maxAnswer = 64 << 10

// Stats counts what the hook did, for metrics and tests.
type Stats struct {
	Allow, Deny, Ignore, Error atomic.Uint64 // backend calls by outcome
	CacheHits                  atomic.Uint64
}

// Hook calls the backend. It is safe for concurrent use.
type Hook struct {
	url      string
	user     *url.Userinfo
	client   *http.Client
	timeout  time.Duration
	allowTTL time.Duration
	denyTTL  time.Duration
	cache    *cache // nil: no cache
	Stats    Stats
	// Now is the cache's clock (time.Now when nil); tests set it.
	Now func() time.Time
}

// New returns a hook for cfg (cfg.URL set).
func New(cfg authconfig.HTTP) (*Hook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("auth.http.url: %w", err)
	}
	h := &Hook{user: u.User, timeout: cfg.CallTimeout(), allowTTL: cfg.AllowTTL, denyTTL: cfg.DenyTTL}
	u.User = nil // sent as Basic authentication, never logged
	h.url = u.String()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	// A CONNECT storm queues for connections instead of opening one per
	// client; each call still ends at the timeout.
	tr.MaxConnsPerHost = 64
	tr.MaxIdleConnsPerHost = 64
	h.client = &http.Client{Transport: tr, Timeout: h.timeout,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if cfg.CacheSize > 0 && (cfg.AllowTTL > 0 || cfg.DenyTTL > 0) {
		h.cache = newCache(cfg.CacheSize)
	}
	return h, nil
}

// Close frees the idle connections to the backend.
func (h *Hook) Close() { h.client.CloseIdleConnections() }

// Purge empties the cache (a reload: the backend's rules may have changed).
func (h *Hook) Purge() {
	if h.cache != nil {
		h.cache.purge()
	}
}

func (h *Hook) now() time.Time {
	if h.Now != nil {
		return h.Now()
	}
	return time.Now()
}

// Ask returns the backend's answer to r: from the cache while a previous
// identical request's answer is fresh, else from a call that ends at the
// configured timeout or when ctx ends. An error is a failed call (not
// cached); a deny is an Answer.
func (h *Hook) Ask(ctx context.Context, r *Request) (Answer, error) {
	var key [sha256.Size]byte
	if h.cache != nil {
		key = cacheKey(r)
		if a, ok := h.cache.get(key, h.now()); ok {
			h.Stats.CacheHits.Add(1)
			return a, nil
		}
	}
	a, err := h.call(ctx, r)
	if err != nil {
		h.Stats.Error.Add(1)
		return Answer{}, err
	}
	ttl := h.denyTTL
	switch a.Result {
	case Allow:
		h.Stats.Allow.Add(1)
		ttl = h.allowTTL
	case Deny:
		h.Stats.Deny.Add(1)
	default:
		h.Stats.Ignore.Add(1)
	}
	if h.cache != nil && ttl > 0 {
		h.cache.put(key, a, h.now().Add(ttl))
	}
	return a, nil
}

func (h *Hook) call(ctx context.Context, r *Request) (Answer, error) {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	body, err := json.Marshal(r)
	if err != nil {
		return Answer{}, fmt.Errorf("http hook: encode request: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.url, bytes.NewReader(body))
	if err != nil {
		return Answer{}, fmt.Errorf("http hook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Accept", "application/json")
	if h.user != nil {
		p, _ := h.user.Password()
		req.SetBasicAuth(h.user.Username(), p)
	}
	resp, err := h.client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL is in the configuration, not needed in every line
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
			return Answer{}, fmt.Errorf("http hook: no answer within %s", h.timeout)
		}
		return Answer{}, fmt.Errorf("http hook: %w", err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer+1))
	if err != nil {
		return Answer{}, fmt.Errorf("http hook: read answer: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusNoContent:
		return Answer{Result: Allow}, nil
	case http.StatusUnauthorized, http.StatusForbidden:
		return Answer{Result: Deny}, nil
	default:
		return Answer{}, fmt.Errorf("http hook: backend answered %s", resp.Status)
	}
	if len(data) > maxAnswer {
		return Answer{}, fmt.Errorf("http hook: answer larger than %d bytes", maxAnswer)
	}
	var a Answer
	if err := json.Unmarshal(data, &a); err != nil {
		return Answer{}, fmt.Errorf("http hook: answer is not the expected JSON: %w", err)
	}
	switch a.Result {
	case Allow, Deny, Ignore:
	default:
		return Answer{}, fmt.Errorf("http hook: answer's result must be allow, deny or ignore (got %q)", a.Result)
	}
	return a, nil
}

// cacheKey identifies a request: every field, with the remote address's
// port left out (a client reconnects from a new port), hashed so that the
// cache holds no password.
func cacheKey(r *Request) [sha256.Size]byte {
	host := r.Remote
	if h, _, err := net.SplitHostPort(r.Remote); err == nil {
		host = h
	}
	d := sha256.New()
	var n [4]byte
	for _, s := range []string{r.Action, r.ClientID, r.Username, r.Password, r.PasswordBase64, r.Token, host, r.Listener, r.Topic, string(rune(r.ProtocolVersion))} {
		binary.BigEndian.PutUint32(n[:], uint32(len(s)))
		d.Write(n[:])
		d.Write([]byte(s))
	}
	var k [sha256.Size]byte
	d.Sum(k[:0])
	return k
}
