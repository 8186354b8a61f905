// Package topic validates MQTT topic names and filters, matches names against
// filters (wildcards, $-topics, $share groups) and keeps the broker's
// subscription index.
package topic

import (
	"errors"
	"strings"
)

// MaxLen is the largest topic name or filter in bytes (a UTF-8 string with a
// two-byte length prefix).
const MaxLen = 65535

// sharePrefix starts every shared subscription filter [MQTT-4.8.2-1].
const sharePrefix = "$share/"

// Errors returned by ValidateName and ValidateFilter. The broker maps them to
// reason code 0x90 (Topic Name invalid) or 0x8F (Topic Filter invalid).
var (
	ErrEmpty         = errors.New("topic: empty topic name or filter")               // [MQTT-4.7.3-1]
	ErrTooLong       = errors.New("topic: longer than 65535 bytes")                  // [MQTT-4.7.3-3]
	ErrNull          = errors.New("topic: contains U+0000")                          // [MQTT-4.7.3-2]
	ErrWildcardName  = errors.New("topic: wildcard in topic name")                   // [MQTT-3.3.2-2]
	ErrMultiLevel    = errors.New("topic: '#' not alone in the last level")          // [MQTT-4.7.1-1]
	ErrSingleLevel   = errors.New("topic: '+' not alone in its level")               // [MQTT-4.7.1-2]
	ErrShareName     = errors.New("topic: invalid share name")                       // [MQTT-4.8.2-1], [MQTT-4.8.2-2]
	ErrShareNoFilter = errors.New("topic: shared subscription without topic filter") // [MQTT-4.8.2-2]
)

// ValidateName checks a PUBLISH topic name: non-empty [MQTT-4.7.3-1], no '+'
// or '#' [MQTT-3.3.2-2], at most 65535 bytes, no U+0000 [MQTT-4.7.3-2] (full
// UTF-8 validity is checked by the codec).
func ValidateName(name string) error {
	switch {
	case name == "":
		return ErrEmpty
	case len(name) > MaxLen:
		return ErrTooLong
	}
	for i := 0; i < len(name); i++ {
		switch name[i] {
		case '+', '#':
			return ErrWildcardName
		case 0:
			return ErrNull
		}
	}
	return nil
}

// ValidateFilter checks a topic filter, including shared ones: non-empty;
// '#' only as the last level and alone in it [MQTT-4.7.1-1]; '+' alone in its
// level [MQTT-4.7.1-2]; for "$share/{group}/{filter}": group non-empty, no
// '+', '#' or '/' in it, and a non-empty valid filter after it
// [MQTT-4.8.2-1/2]. Like names, filters are at most 65535 bytes and hold no
// U+0000 [MQTT-4.7.3-2].
func ValidateFilter(filter string) error {
	if len(filter) > MaxLen {
		return ErrTooLong
	}
	group, inner, ok := ParseShared(filter)
	if !ok {
		return validateFilter(filter)
	}
	if group == "" || strings.ContainsAny(group, "+#") {
		return ErrShareName
	}
	if strings.IndexByte(group, 0) >= 0 {
		return ErrNull
	}
	if inner == "" {
		return ErrShareNoFilter
	}
	return validateFilter(inner)
}

// validateFilter checks a non-shared filter.
func validateFilter(f string) error {
	if f == "" {
		return ErrEmpty // [MQTT-4.7.3-1]
	}
	for i := 0; i < len(f); i++ {
		switch f[i] {
		case '#':
			// [MQTT-4.7.1-1] alone in its level, and the last level.
			if i != len(f)-1 || (i > 0 && f[i-1] != '/') {
				return ErrMultiLevel
			}
		case '+':
			// [MQTT-4.7.1-2] alone in its level.
			if (i > 0 && f[i-1] != '/') || (i < len(f)-1 && f[i+1] != '/') {
				return ErrSingleLevel
			}
		case 0:
			return ErrNull // [MQTT-4.7.3-2]
		}
	}
	return nil
}

// ParseShared splits "$share/group/filter" into group and filter; ok is false
// for a non-shared filter (one not starting with "$share/"). A malformed
// shared filter still reports ok: "$share/g" gives group "g" and an empty
// inner filter, which ValidateFilter rejects.
func ParseShared(filter string) (group, inner string, ok bool) {
	if !strings.HasPrefix(filter, sharePrefix) {
		return "", "", false
	}
	rest := filter[len(sharePrefix):]
	i := strings.IndexByte(rest, '/')
	if i < 0 {
		return rest, "", true
	}
	return rest[:i], rest[i+1:], true
}

// Match reports whether a topic name matches a filter (non-shared), including
// the rule that a filter starting with a wildcard does not match names
// starting with '$' [MQTT-4.7.2-1]; "sport/#" matches "sport" too
// [MQTT-4.7.1-1]; "+" matches an empty level. Levels are compared byte for
// byte [MQTT-4.7.3-4]. The result for an invalid filter is unspecified, but
// Match never panics.
func Match(filter, name string) bool {
	if name != "" && name[0] == '$' && filter != "" && (filter[0] == '+' || filter[0] == '#') {
		return false // [MQTT-4.7.2-1]
	}
	fi, ni := 0, 0
	for {
		fe := levelEnd(filter, fi)
		fl := filter[fi:fe]
		if fl == "#" {
			return true // matches this level and all below it
		}
		ne := levelEnd(name, ni)
		if fl != "+" && fl != name[ni:ne] {
			return false
		}
		fdone, ndone := fe == len(filter), ne == len(name)
		switch {
		case fdone && ndone:
			return true
		case ndone:
			return filter[fe:] == "/#" // "sport/#" matches "sport"
		case fdone:
			return false
		}
		fi, ni = fe+1, ne+1
	}
}

// levelEnd returns the index of the '/' ending the level that starts at i,
// or len(s).
func levelEnd(s string, i int) int {
	if j := strings.IndexByte(s[i:], '/'); j >= 0 {
		return i + j
	}
	return len(s)
}

// Covers reports whether every topic that filter inner matches is also
// matched by filter outer: "a/#" covers "a/b/+" and "a/#", "+/b" covers
// "x/b" but not "#".
func Covers(outer, inner string) bool {
	for {
		o, orest, omore := strings.Cut(outer, "/")
		i, irest, imore := strings.Cut(inner, "/")
		switch {
		case o == "#":
			return true
		case i == "#":
			return false
		case o == "+":
			// Matches any one level, "+" included.
		case o != i || i == "+":
			return false
		}
		if !omore || !imore {
			return !omore && !imore || omore && orest == "#"
		}
		outer, inner = orest, irest
	}
}
