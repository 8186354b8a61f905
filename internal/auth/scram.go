package auth

import (
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/packet"
)

// MethodSCRAMSHA256 is the MQTT 5 Authentication Method of SCRAM-SHA-256
// (RFC 5802, RFC 7677), offered when a password file is configured.
const MethodSCRAMSHA256 = "SCRAM-SHA-256"

// SCRAM iteration counts: DefaultSCRAMIterations is what "starling passwd
// -scram" uses (OWASP's PBKDF2-HMAC-SHA256 recommendation; the client pays
// it on every SCRAM login, the broker only for a plain user name and
// password login against a SCRAM entry). RFC 7677 asks for at least 4096.
const (
	DefaultSCRAMIterations = 600000
	MinSCRAMIterations     = 4096
	MaxSCRAMIterations     = 10000000
)

var _ broker.EnhancedAuthenticator = (*Auth)(nil)

// b64std is SCRAM's base64 (padded, RFC 5802 section 7).
var b64std = base64.StdEncoding

// scramHash is a SCRAM-SHA-256 verifier: the server never needs the
// password, only StoredKey = H(ClientKey) and ServerKey.
type scramHash struct {
	iter      int
	salt      []byte
	storedKey []byte
	serverKey []byte
}

// SCRAMKeys returns RFC 5802's SaltedPassword-derived StoredKey and
// ServerKey for password, salt and iteration count.
func SCRAMKeys(password, salt []byte, iter int) (storedKey, serverKey []byte) {
	salted, err := pbkdf2.Key(sha256.New, string(password), salt, iter, sha256.Size)
	if err != nil { // only for out-of-range key lengths
		panic(err)
	}
	clientKey := hmacSHA256(salted, []byte("Client Key"))
	sk := sha256.Sum256(clientKey)
	return sk[:], hmacSHA256(salted, []byte("Server Key"))
}

func hmacSHA256(key, msg []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(msg)
	return m.Sum(nil)
}

// HashSCRAM returns the SCRAM-SHA-256 verifier of password with a random
// 16-byte salt: "$scram-sha-256$<iter>$<salt>$<StoredKey>$<ServerKey>"
// (unpadded base64). Such an entry allows both SCRAM and plain user name
// and password logins; argon2id and bcrypt entries only the latter.
func HashSCRAM(password []byte, iter int) (string, error) {
	if iter < MinSCRAMIterations || iter > MaxSCRAMIterations {
		return "", fmt.Errorf("auth: SCRAM iterations %d out of range %d..%d", iter, MinSCRAMIterations, MaxSCRAMIterations)
	}
	salt := make([]byte, 16)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: salt: %w", err)
	}
	stored, server := SCRAMKeys(password, salt, iter)
	return fmt.Sprintf("$scram-sha-256$%d$%s$%s$%s", iter, b64.EncodeToString(salt),
		b64.EncodeToString(stored), b64.EncodeToString(server)), nil
}

func parseSCRAM(s string) (*scramHash, error) {
	parts := strings.Split(s, "$")
	// "", "scram-sha-256", iter, salt, storedKey, serverKey
	if len(parts) != 6 {
		return nil, errors.New("bad scram-sha-256 entry: want $scram-sha-256$iter$salt$storedkey$serverkey")
	}
	var h scramHash
	var err error
	if h.iter, err = strconv.Atoi(parts[2]); err != nil || h.iter < MinSCRAMIterations || h.iter > MaxSCRAMIterations {
		return nil, fmt.Errorf("bad scram-sha-256 iterations %q: want %d..%d", parts[2], MinSCRAMIterations, MaxSCRAMIterations)
	}
	if h.salt, err = b64.DecodeString(parts[3]); err != nil || len(h.salt) < 8 || len(h.salt) > 64 {
		return nil, errors.New("bad scram-sha-256 salt: want 8 to 64 bytes of unpadded base64")
	}
	if h.storedKey, err = b64.DecodeString(parts[4]); err != nil || len(h.storedKey) != sha256.Size {
		return nil, errors.New("bad scram-sha-256 stored key: want 32 bytes of unpadded base64")
	}
	if h.serverKey, err = b64.DecodeString(parts[5]); err != nil || len(h.serverKey) != sha256.Size {
		return nil, errors.New("bad scram-sha-256 server key: want 32 bytes of unpadded base64")
	}
	return &h, nil
}

// verify checks a plain password against the verifier.
func (h *scramHash) verify(password []byte) bool {
	stored, _ := SCRAMKeys(password, h.salt, h.iter)
	return subtle.ConstantTimeCompare(stored, h.storedKey) == 1
}

// AuthMethods lists the enhanced authentication methods offered: SCRAM-SHA-256
// when a password file is configured, none otherwise.
func (a *Auth) AuthMethods() []string {
	var m []string
	if a.state.Load().users != nil {
		m = append(m, MethodSCRAMSHA256)
	}
	if a.jwt.Load() != nil {
		m = append(m, MethodJWT)
	}
	return m
}

// StartAuth runs the server side of SCRAM-SHA-256 (RFC 5802 / RFC 7677,
// without channel binding): data is the client-first-message; the returned
// step carries the server-first-message and expects the
// client-final-message, whose proof is checked against the user's stored
// verifier; the final step carries the server-final-message ("v=...").
//
// Only "$scram-sha-256$" password file entries can log in this way: users
// with argon2id or bcrypt hashes, and unknown users, go through the same
// exchange with a made-up salt and fail at the proof with 0x86, so SCRAM
// does not reveal which users exist. A malformed message or a request for
// channel binding is refused with 0x87. With a CONNECT user name, it must be
// the SCRAM user name. SCRAM costs the broker two HMACs and a hash, so it
// does not take a verification slot.
func (a *Auth) StartAuth(ctx context.Context, c *broker.ConnectInfo, method string, data []byte) (broker.AuthStep, error) {
	refuse := func(code packet.ReasonCode, reason string) (broker.AuthStep, error) {
		a.loginFailed(c, "SCRAM-SHA-256: "+reason)
		return broker.AuthStep{Code: code}, nil
	}
	if method == MethodJWT && a.jwt.Load() != nil {
		id, code := a.tokenLogin(ctx, c, data)
		return broker.AuthStep{Identity: id, Code: code}, nil
	}
	if method != MethodSCRAMSHA256 {
		return broker.AuthStep{Code: packet.BadAuthenticationMethod}, nil
	}
	st := a.state.Load()
	if st.users == nil {
		return broker.AuthStep{Code: packet.BadAuthenticationMethod}, nil
	}
	cf, err := parseClientFirst(string(data))
	if err != nil {
		return refuse(packet.NotAuthorized, err.Error())
	}
	ci := *c
	ci.Username = cf.user
	if c.HasUsername && c.Username != cf.user {
		return refuse(packet.BadUsernameOrPassword, "user name differs from CONNECT")
	}
	h, known := st.users[cf.user]
	var v *scramHash
	if known && h.scram != nil {
		v = h.scram
	} else {
		// A stable made-up salt per user name, so repeated attempts look
		// like a real user's.
		fake := hmacSHA256(a.scramSecret, []byte(cf.user))
		v = &scramHash{iter: st.scramIter, salt: fake[:16]}
	}
	fullNonce := cf.nonce + serverNonce()
	serverFirst := "r=" + fullNonce + ",s=" + b64std.EncodeToString(v.salt) + ",i=" + strconv.Itoa(v.iter)
	next := func(_ context.Context, data []byte) (broker.AuthStep, error) {
		final := string(data)
		without, proof, ok := strings.Cut(final, ",p=")
		if !ok || strings.Contains(proof, ",") {
			return refuse(packet.NotAuthorized, "malformed client-final-message")
		}
		attrs := strings.Split(without, ",")
		if len(attrs) < 2 || attrs[0] != "c="+b64std.EncodeToString([]byte(cf.gs2)) {
			return refuse(packet.NotAuthorized, "channel binding data differs from the gs2 header")
		}
		if attrs[1] != "r="+fullNonce {
			return refuse(packet.NotAuthorized, "nonce mismatch")
		}
		p, err := b64std.DecodeString(proof)
		if err != nil || len(p) != sha256.Size {
			return refuse(packet.NotAuthorized, "malformed client proof")
		}
		switch {
		case !known:
			return refuse(packet.BadUsernameOrPassword, "unknown user")
		case v != h.scram:
			return refuse(packet.BadUsernameOrPassword, "user has no scram-sha-256 entry in the password file")
		}
		authMsg := []byte(cf.bare + "," + serverFirst + "," + without)
		sig := hmacSHA256(v.storedKey, authMsg)
		for i := range sig {
			sig[i] ^= p[i] // ClientKey
		}
		stored := sha256.Sum256(sig)
		if subtle.ConstantTimeCompare(stored[:], v.storedKey) != 1 {
			return refuse(packet.BadUsernameOrPassword, "wrong password")
		}
		serverSig := hmacSHA256(v.serverKey, authMsg)
		return broker.AuthStep{Code: packet.Success, Data: []byte("v=" + b64std.EncodeToString(serverSig)),
			Identity: broker.Identity{Username: cf.user, Superuser: a.superusers[cf.user], Credential: passwordCred{user: cf.user, hash: h.text}}}, nil
	}
	c = &ci // the audit log names the SCRAM user from here on
	return broker.AuthStep{Data: []byte(serverFirst), Next: next}, nil
}

// serverNonce returns the server's half of the SCRAM nonce: 18 random
// bytes in base64 (a variable so that a test can replay RFC 7677).
var serverNonce = func() string {
	b := make([]byte, 18)
	rand.Read(b)
	return b64std.EncodeToString(b)
}

// clientFirst is a parsed SCRAM client-first-message.
type clientFirst struct {
	gs2   string // "n,," or "y,,": the gs2 header, echoed base64 in c=
	bare  string // client-first-message-bare
	user  string // decoded saslname
	nonce string
}

// parseClientFirst parses "n,,n=user,r=nonce[,ext...]" (RFC 5802 section
// 7). Channel binding ("p=") and authorization identities ("a=") are not
// supported; mandatory extensions ("m=") are refused as the RFC requires.
func parseClientFirst(s string) (*clientFirst, error) {
	if len(s) > 1024 {
		return nil, errors.New("client-first-message too long")
	}
	var cf clientFirst
	switch {
	case strings.HasPrefix(s, "n,,"), strings.HasPrefix(s, "y,,"):
		cf.gs2, cf.bare = s[:3], s[3:]
	case strings.HasPrefix(s, "p="):
		return nil, errors.New("channel binding not supported")
	default:
		return nil, errors.New("malformed gs2 header (authorization identities are not supported)")
	}
	attrs := strings.Split(cf.bare, ",")
	if len(attrs) < 2 || !strings.HasPrefix(attrs[0], "n=") || !strings.HasPrefix(attrs[1], "r=") {
		return nil, errors.New("malformed client-first-message")
	}
	for _, x := range attrs[2:] {
		if strings.HasPrefix(x, "m=") {
			return nil, errors.New("mandatory extension not supported")
		}
	}
	user, err := decodeSASLName(attrs[0][2:])
	if err != nil {
		return nil, err
	}
	cf.user, cf.nonce = user, attrs[1][2:]
	if cf.nonce == "" || strings.ContainsFunc(cf.nonce, func(r rune) bool { return r < 0x21 || r > 0x7e }) {
		return nil, errors.New("malformed client nonce")
	}
	if err := ValidUsername(cf.user); err != nil {
		return nil, err
	}
	return &cf, nil
}

// decodeSASLName undoes RFC 5802's "=2C" (',') and "=3D" ('=') escapes.
// User names are compared as bytes (no SASLprep).
func decodeSASLName(s string) (string, error) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", errors.New("malformed user name escape")
		}
		i += 2
	}
	return b.String(), nil
}
