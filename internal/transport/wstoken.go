package transport

import "net/http"

// TokenQueryParam is the URL query parameter that may carry a bearer token
// on a WebSocket upgrade (browsers cannot set headers on a WebSocket).
const TokenQueryParam = "access_token"

// RequestToken returns the bearer token of an upgrade request: the
// access_token query parameter when queryParam is set, else the named
// cookie when cookie is not ""; nil when there is none.
func RequestToken(r *http.Request, queryParam bool, cookie string) []byte {
	if queryParam {
		if t := r.URL.Query().Get(TokenQueryParam); t != "" {
			return []byte(t)
		}
	}
	if cookie != "" {
		if c, err := r.Cookie(cookie); err == nil && c.Value != "" {
			return []byte(c.Value)
		}
	}
	return nil
}

// SetHTTPToken attaches the token of the upgrade request to the connection,
// for the broker to use when CONNECT has no password.
func (c *WSConn) SetHTTPToken(t []byte) { c.token = t }

// HTTPToken returns the token set by SetHTTPToken, or nil.
func (c *WSConn) HTTPToken() []byte { return c.token }

// HTTPRequestInfo returns the Origin header and the path of the upgrade
// request, for the broker's log lines about the connection's client.
func (c *WSConn) HTTPRequestInfo() (origin, path string) { return c.origin, c.path }
