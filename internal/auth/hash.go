package auth

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
)

// Argon2Params are the argon2id cost parameters of a hash.
type Argon2Params struct {
	Memory  uint32 // KiB
	Time    uint32 // iterations
	Threads uint8  // parallelism
	SaltLen uint32 // bytes
	KeyLen  uint32 // bytes
}

// DefaultArgon2 are the parameters "starling passwd" uses: the first of
// OWASP's argon2id recommendations (Password Storage Cheat Sheet: m=19 MiB,
// t=2, p=1), with a 16-byte salt and a 32-byte key. They cost about 19 MiB
// and a few tens of milliseconds of one core per verification; a broker
// verifies many CONNECTs, so the memory-heavy RFC 9106 profiles (64 MiB to
// 2 GiB) would bound concurrency far more tightly.
var DefaultArgon2 = Argon2Params{Memory: 19 * 1024, Time: 2, Threads: 1, SaltLen: 16, KeyLen: 32}

// Bounds on hashes read from a password file, so a typo (or a hostile file)
// cannot make one verification take gigabytes or minutes.
const (
	maxArgonMemory  = 1 << 20 // KiB: 1 GiB
	maxArgonTime    = 64
	maxArgonThreads = 64
	maxBcryptCost   = 16
	maxLineLen      = 4096
)

// hash is a parsed password hash.
type hash struct {
	text   string // as in the file: an unchanged entry survives a reload
	argon  *argonHash
	bcrypt []byte // the whole "$2b$..." string
	scram  *scramHash
}

type argonHash struct {
	p    Argon2Params
	salt []byte
	key  []byte
}

var b64 = base64.RawStdEncoding

// HashPassword returns the argon2id PHC string of password with p and a
// random salt: "$argon2id$v=19$m=19456,t=2,p=1$<salt>$<key>".
func HashPassword(password []byte, p Argon2Params) (string, error) {
	if p.SaltLen < 8 || p.KeyLen < 16 || p.Memory < 8*uint32(p.Threads) || p.Time < 1 || p.Threads < 1 ||
		p.Memory > maxArgonMemory || p.Time > maxArgonTime || p.Threads > maxArgonThreads {
		return "", fmt.Errorf("auth: argon2id parameters out of range: m=%d t=%d p=%d", p.Memory, p.Time, p.Threads)
	}
	salt := make([]byte, p.SaltLen)
	if _, err := rand.Read(salt); err != nil {
		return "", fmt.Errorf("auth: salt: %w", err)
	}
	key := argon2.IDKey(password, salt, p.Time, p.Memory, p.Threads, p.KeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, p.Memory, p.Time, p.Threads,
		b64.EncodeToString(salt), b64.EncodeToString(key)), nil
}

// parseHash parses an argon2id PHC string or a bcrypt hash.
func parseHash(s string) (*hash, error) {
	switch {
	case strings.HasPrefix(s, "$argon2id$"):
		a, err := parseArgon2id(s)
		if err != nil {
			return nil, err
		}
		return &hash{argon: a}, nil
	case strings.HasPrefix(s, "$2a$"), strings.HasPrefix(s, "$2b$"), strings.HasPrefix(s, "$2y$"):
		cost, err := bcrypt.Cost([]byte(s))
		if err != nil {
			return nil, fmt.Errorf("bad bcrypt hash: %v", err)
		}
		if cost > maxBcryptCost {
			return nil, fmt.Errorf("bcrypt cost %d above %d", cost, maxBcryptCost)
		}
		if len(s) != 60 {
			return nil, errors.New("bad bcrypt hash: not 60 characters")
		}
		return &hash{bcrypt: []byte(s)}, nil
	case strings.HasPrefix(s, "$scram-sha-256$"):
		sc, err := parseSCRAM(s)
		if err != nil {
			return nil, err
		}
		return &hash{scram: sc}, nil
	case strings.HasPrefix(s, "$argon2i$"), strings.HasPrefix(s, "$argon2d$"):
		return nil, errors.New("only argon2id is supported, not argon2i or argon2d")
	default:
		return nil, errors.New("unknown hash format (want $argon2id$..., bcrypt $2a$/$2b$/$2y$ or $scram-sha-256$...)")
	}
}

// parseArgon2id parses "$argon2id$v=19$m=M,t=T,p=P$salt$key" (the version
// field may be absent, meaning 0x10, which x/crypto does not implement).
func parseArgon2id(s string) (*argonHash, error) {
	parts := strings.Split(s, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	if len(parts) != 6 {
		return nil, errors.New("bad argon2id hash: want $argon2id$v=19$m=..,t=..,p=..$salt$hash")
	}
	if parts[2] != "v=19" {
		return nil, fmt.Errorf("bad argon2id hash: version %q, want v=19", parts[2])
	}
	var a argonHash
	var seen [3]bool
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return nil, errors.New("bad argon2id hash: want m=..,t=..,p=..")
	}
	for _, kv := range params {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			return nil, fmt.Errorf("bad argon2id parameter %q", kv)
		}
		n, err := strconv.ParseUint(v, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("bad argon2id parameter %q", kv)
		}
		var i int
		switch k {
		case "m":
			i, a.p.Memory = 0, uint32(n)
		case "t":
			i, a.p.Time = 1, uint32(n)
		case "p":
			if n > 255 {
				return nil, fmt.Errorf("bad argon2id parameter %q", kv)
			}
			i, a.p.Threads = 2, uint8(n)
		default:
			return nil, fmt.Errorf("bad argon2id parameter %q", kv)
		}
		if seen[i] {
			return nil, fmt.Errorf("argon2id parameter %q repeated", k)
		}
		seen[i] = true
	}
	switch {
	case a.p.Threads < 1 || a.p.Threads > maxArgonThreads:
		return nil, fmt.Errorf("argon2id p=%d out of range 1..%d", a.p.Threads, maxArgonThreads)
	case a.p.Time < 1 || a.p.Time > maxArgonTime:
		return nil, fmt.Errorf("argon2id t=%d out of range 1..%d", a.p.Time, maxArgonTime)
	case a.p.Memory < 8*uint32(a.p.Threads) || a.p.Memory > maxArgonMemory:
		return nil, fmt.Errorf("argon2id m=%d out of range %d..%d KiB", a.p.Memory, 8*uint32(a.p.Threads), maxArgonMemory)
	}
	var err error
	if a.salt, err = b64.DecodeString(parts[4]); err != nil || len(a.salt) < 8 || len(a.salt) > 64 {
		return nil, errors.New("bad argon2id salt: want 8 to 64 bytes of unpadded base64")
	}
	if a.key, err = b64.DecodeString(parts[5]); err != nil || len(a.key) < 16 || len(a.key) > 128 {
		return nil, errors.New("bad argon2id hash: want 16 to 128 bytes of unpadded base64")
	}
	a.p.SaltLen, a.p.KeyLen = uint32(len(a.salt)), uint32(len(a.key))
	return &a, nil
}

// verify reports whether password matches h, comparing in constant time.
func (h *hash) verify(password []byte) bool {
	if h.argon != nil {
		a := h.argon
		key := argon2.IDKey(password, a.salt, a.p.Time, a.p.Memory, a.p.Threads, uint32(len(a.key)))
		return subtle.ConstantTimeCompare(key, a.key) == 1
	}
	if h.scram != nil {
		return h.scram.verify(password)
	}
	// CompareHashAndPassword recomputes the hash and compares it with
	// subtle.ConstantTimeCompare. bcrypt only looks at the first 72 bytes
	// of a password.
	return bcrypt.CompareHashAndPassword(h.bcrypt, password) == nil
}

// PasswordEntry is one user of a password file.
type PasswordEntry struct {
	Line int    // 1-based
	User string // the name before the first ':'
	Hash string // the text after it
}

// ParsePasswordFile reads a password file: one "user:hash" per line, blank
// lines and lines starting with '#' ignored, surrounding spaces trimmed.
// Every hash is parsed (argon2id PHC, bcrypt or a SCRAM-SHA-256 verifier); a bad line or a user listed
// twice is an error naming the line, without the hash.
func ParsePasswordFile(r io.Reader) ([]PasswordEntry, error) {
	_, entries, err := parsePasswords(r)
	return entries, err
}

func parsePasswords(r io.Reader) (map[string]*hash, []PasswordEntry, error) {
	users := make(map[string]*hash)
	var entries []PasswordEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 512), maxLineLen)
	line := 0
	for sc.Scan() {
		line++
		text := string(bytes.TrimSpace(sc.Bytes()))
		if text == "" || text[0] == '#' {
			continue
		}
		user, h, ok := strings.Cut(text, ":")
		if !ok {
			return nil, nil, fmt.Errorf("line %d: want user:hash", line)
		}
		if err := ValidUsername(user); err != nil {
			return nil, nil, fmt.Errorf("line %d: %v", line, err)
		}
		if _, dup := users[user]; dup {
			return nil, nil, fmt.Errorf("line %d: user %q listed twice", line, user)
		}
		ph, err := parseHash(h)
		if err != nil {
			return nil, nil, fmt.Errorf("line %d: user %q: %v", line, user, err)
		}
		ph.text = h
		users[user] = ph
		entries = append(entries, PasswordEntry{Line: line, User: user, Hash: h})
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, nil, fmt.Errorf("line %d: longer than %d bytes", line+1, maxLineLen)
		}
		return nil, nil, err
	}
	return users, entries, nil
}
