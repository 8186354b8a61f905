package broker

import (
	"log/slog"

	"github.com/starling-mqtt/starling/internal/packet"
)

// RevokeInvalid disconnects every connected client whose identity the
// Authenticator, when it is a Revoker, no longer accepts; call it after
// the password file or the trusted certificate authorities changed. An
// MQTT 5 client gets DISCONNECT 0x87 (not authorized): 0x8A (banned) is a
// CONNACK code only, not allowed in DISCONNECT, and a deleted user or a
// changed password is not a ban; the client learns its standing on its
// next CONNECT (0x86). A 3.x client is closed. Sessions stay, subject to
// their expiry. It returns the number of clients disconnected.
func (b *Broker) RevokeInvalid() int {
	rv, ok := b.authn.(Revoker)
	if !ok {
		return 0
	}
	b.mu.Lock()
	cls := make([]*client, 0, len(b.clients))
	for _, cl := range b.clients {
		cls = append(cls, cl)
	}
	b.mu.Unlock()
	n := 0
	for _, cl := range cls {
		info := cl.info.Load()
		if info == nil || rv.StillValid(info) { // outside the lock: it may verify a certificate
			continue
		}
		cl.mu.Lock()
		// The same connection the check was about, not a newer login.
		revoked := cl.conn != nil && cl.info.Load() == info
		if revoked {
			cl.closeConn(packet.NotAuthorized, "credentials revoked")
		}
		cl.mu.Unlock()
		if revoked {
			n++
			b.auditLog(slog.LevelWarn, "client disconnected: credentials revoked", slog.String("client_id", info.ClientID),
				slog.String("username", info.Username), slog.String("remote", info.Remote))
		}
	}
	return n
}
