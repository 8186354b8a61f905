package cluster

import (
	"encoding/base64"
	"strings"
)

// Subjects used on the NATS backplane. Topic levels become subject tokens,
// so NATS itself carries interest: a node receives only topics someone on
// it subscribes to.
const (
	msgPrefix   = "stl.m"      // stl.m.<levels...>: messages published on a node
	claimPrefix = "stl.claim." // stl.claim.<node>: session hand-over requests
	xferPrefix  = "stl.xfer."  // stl.xfer.<node>: a hand-over's state, in chunks, and its outcome
	whoisPrefix = "stl.whois." // stl.whois.<cluster address>: the name of the node listening there
)

// level encodes one topic level as a subject token. Plain levels stay
// readable; anything NATS treats specially (dots, spaces, '*', '>', empty
// levels, or a leading '~') is base64url-encoded behind '~'.
func level(l string) string {
	if l != "" && l[0] != '~' && plain(l) {
		return l
	}
	return "~" + base64.RawURLEncoding.EncodeToString([]byte(l))
}

func plain(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == '$') {
			return false
		}
	}
	return true
}

// topicSubject is the subject a message on topic name is published to.
func topicSubject(name string) string {
	var b strings.Builder
	b.Grow(len(msgPrefix) + len(name) + 8)
	b.WriteString(msgPrefix)
	for l := range strings.SplitSeq(name, "/") {
		b.WriteByte('.')
		b.WriteString(level(l))
	}
	return b.String()
}

// filterSubjects are the subjects that carry every topic filter matches:
// '+' becomes '*' and a trailing '#' becomes '>' plus, because "a/#" also
// matches "a", the parent itself. NATS wildcards are coarser than MQTT's
// (a leading wildcard also matches "$" topics); the receiving node's own
// matching is exact.
func filterSubjects(filter string) []string {
	levels := strings.Split(filter, "/")
	var b strings.Builder
	b.WriteString(msgPrefix)
	for i, l := range levels {
		switch l {
		case "+":
			b.WriteString(".*")
		case "#":
			if i == 0 {
				return []string{msgPrefix + ".>"}
			}
			parent := b.String()
			return []string{parent, parent + ".>"}
		default:
			b.WriteByte('.')
			b.WriteString(level(l))
		}
	}
	return []string{b.String()}
}

// key encodes a client ID, topic or node name as a KV key or subject token.
func key(s string) string {
	if s == "" {
		return "_"
	}
	return base64.RawURLEncoding.EncodeToString([]byte(s))
}

// unkey reverses key.
func unkey(k string) (string, error) {
	if k == "_" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(k)
	return string(b), err
}
