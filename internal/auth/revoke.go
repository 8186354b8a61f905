package auth

import (
	"crypto/x509"
	"time"

	"github.com/starling-mqtt/starling/internal/broker"
)

var _ broker.Revoker = (*Auth)(nil)

// passwordCred is the Credential of a client that proved a password (or a
// SCRAM verifier): the user and the file's hash text it was checked
// against.
type passwordCred struct{ user, hash string }

// certCred is the Credential of a client named by its certificate: the
// chain it presented, leaf first. A pointer, so Identity stays comparable.
type certCred struct{ chain []*x509.Certificate }

// SetClientCAs gives the current client certificate authorities (nil
// pool: not known), against which StillValid checks certificate-named
// clients. Call before serving.
func (a *Auth) SetClientCAs(f func() *x509.CertPool) { a.clientCAs = f }

// StillValid reports whether a connected client's identity still holds
// under the current files: a password user must still be in the password
// file with the same hash (a changed hash may accept the same password,
// but only the client can prove it: it reconnects), and a client named by
// its certificate must still chain to a trusted authority. Anonymous
// clients and those of other authenticators are kept.
func (a *Auth) StillValid(c *broker.ClientInfo) bool {
	switch cr := c.Credential.(type) {
	case passwordCred:
		h := a.state.Load().users[cr.user]
		return h != nil && h.text == cr.hash
	case *certCred:
		if a.clientCAs == nil || len(cr.chain) == 0 {
			return true
		}
		roots := a.clientCAs()
		if roots == nil {
			return true
		}
		inter := x509.NewCertPool()
		for _, c := range cr.chain[1:] {
			inter.AddCert(c)
		}
		_, err := cr.chain[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, CurrentTime: time.Now(),
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
		return err == nil
	}
	return true
}
