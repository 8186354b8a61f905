package topic

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		want error
	}{
		{"sport/tennis/player1", nil},
		{"sport", nil},
		{"/", nil},
		{"//", nil},
		{"/finance", nil},
		{"$SYS/broker/clients", nil},
		{"sport/tennis/player1/ranking", nil},
		{" ", nil},
		{"ünïcødé/✓", nil},
		{strings.Repeat("a", MaxLen), nil},
		{"", ErrEmpty},                              // [MQTT-4.7.3-1]
		{strings.Repeat("a", MaxLen+1), ErrTooLong}, // [MQTT-4.7.3-3]
		{"sport/+", ErrWildcardName},                // [MQTT-3.3.2-2]
		{"sport/#", ErrWildcardName},
		{"sport+", ErrWildcardName},
		{"#", ErrWildcardName},
		{"a\x00b", ErrNull}, // [MQTT-4.7.3-2]
	}
	for _, tt := range tests {
		if got := ValidateName(tt.name); !errors.Is(got, tt.want) {
			t.Errorf("ValidateName(%.40q) = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestValidateFilter(t *testing.T) {
	tests := []struct {
		filter string
		want   error
	}{
		// [MQTT-4.7.1-1], [MQTT-4.7.1-2] and the examples of section 4.7.
		{"sport/tennis/player1/#", nil},
		{"sport/#", nil},
		{"#", nil},
		{"sport/tennis/+", nil},
		{"sport/+", nil},
		{"sport/+/player1", nil},
		{"+", nil},
		{"+/+", nil},
		{"/+", nil},
		{"+/tennis/#", nil},
		{"+/monitor/Clients", nil},
		{"$SYS/#", nil},
		{"$SYS/monitor/+", nil},
		{"/", nil},
		{"//", nil},
		{"sport", nil},
		{"$share", nil}, // not shared: no "$share/" prefix
		{"$shared/g/x", nil},
		{"a/$share/g/x", nil},
		{strings.Repeat("a", MaxLen), nil},
		{"", ErrEmpty},
		{strings.Repeat("a", MaxLen+1), ErrTooLong},
		{"a\x00", ErrNull},
		{"sport/tennis#", ErrMultiLevel},
		{"sport/tennis/#/ranking", ErrMultiLevel},
		{"#/", ErrMultiLevel},
		{"##", ErrMultiLevel},
		{"a#", ErrMultiLevel},
		{"sport+", ErrSingleLevel},
		{"+sport", ErrSingleLevel},
		{"sport/+tennis", ErrSingleLevel},
		{"++", ErrSingleLevel},
		{"+#", ErrSingleLevel},
		// Shared subscriptions [MQTT-4.8.2-1], [MQTT-4.8.2-2].
		{"$share/g/x", nil},
		{"$share/g/#", nil},
		{"$share/g/+", nil},
		{"$share/g/sport/+/player1", nil},
		{"$share/g/$SYS/#", nil},
		{"$share/consumer1/sport/tennis/+", nil},
		{"$share/g//", nil},
		{"$share/g/$share/h/x", nil},
		{"$share//x", ErrShareName},
		{"$share/", ErrShareName},
		{"$share/g+/x", ErrShareName},
		{"$share/+/x", ErrShareName},
		{"$share/#/x", ErrShareName},
		{"$share/g#/x", ErrShareName},
		{"$share/g\x00/x", ErrNull},
		{"$share/g", ErrShareNoFilter},
		{"$share/g/", ErrShareNoFilter},
		{"$share/g/sport+", ErrSingleLevel},
		{"$share/g/a/#/b", ErrMultiLevel},
	}
	for _, tt := range tests {
		if got := ValidateFilter(tt.filter); !errors.Is(got, tt.want) {
			t.Errorf("ValidateFilter(%.40q) = %v, want %v", tt.filter, got, tt.want)
		}
	}
}

func TestParseShared(t *testing.T) {
	tests := []struct {
		filter, group, inner string
		ok                   bool
	}{
		{"$share/g/x", "g", "x", true},
		{"$share/consumer1/sport/tennis/+", "consumer1", "sport/tennis/+", true},
		{"$share/g/#", "g", "#", true},
		{"$share/g//", "g", "/", true},
		{"$share/g/", "g", "", true},
		{"$share/g", "g", "", true},
		{"$share//x", "", "x", true},
		{"$share/", "", "", true},
		{"$share", "", "", false},
		{"$SHARE/g/x", "", "", false},
		{"sport/#", "", "", false},
		{"", "", "", false},
		{"a/$share/g/x", "", "", false},
	}
	for _, tt := range tests {
		g, in, ok := ParseShared(tt.filter)
		if g != tt.group || in != tt.inner || ok != tt.ok {
			t.Errorf("ParseShared(%q) = %q, %q, %v; want %q, %q, %v", tt.filter, g, in, ok, tt.group, tt.inner, tt.ok)
		}
	}
}

// matchTests are the examples of MQTT 5.0 section 4.7 and edge cases; they
// are used by TestMatch and, through the index, by TestIndexMatchTable.
var matchTests = []struct {
	filter, name string
	want         bool
}{
	// 4.7.1.2 Multi-level wildcard.
	{"sport/tennis/player1/#", "sport/tennis/player1", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/ranking", true},
	{"sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true},
	{"sport/tennis/player1/#", "sport/tennis/player2", false},
	{"sport/tennis/player1/#", "sport/tennis", false},
	{"sport/#", "sport", true}, // [MQTT-4.7.1-1] parent level too
	{"sport/#", "sport/", true},
	{"sport/#", "sports", false},
	{"#", "sport/tennis", true},
	{"#", "/", true},
	{"#", "a", true},
	// 4.7.1.3 Single-level wildcard.
	{"sport/tennis/+", "sport/tennis/player1", true},
	{"sport/tennis/+", "sport/tennis/player2", true},
	{"sport/tennis/+", "sport/tennis/player1/ranking", false},
	{"sport/+", "sport", false},
	{"sport/+", "sport/", true}, // '+' matches an empty level
	{"+", "sport", true},
	{"+", "", true},
	{"+", "/", false},
	{"+/+", "/finance", true},
	{"+/+", "a/b", true},
	{"+/+", "a", false},
	{"+/+", "a/b/c", false},
	{"/+", "/finance", true},
	{"/+", "finance", false},
	{"+", "/finance", false},
	{"sport/+/player1", "sport/tennis/player1", true},
	{"sport/+/player1", "sport//player1", true},
	{"sport/+/player1", "sport/tennis/player2", false},
	{"+/tennis/#", "sport/tennis", true},
	{"+/tennis/#", "sport/tennis/x/y", true},
	{"+/+/+", "a//", true},
	// 4.7.2 Topics beginning with $ [MQTT-4.7.2-1].
	{"#", "$SYS/broker", false},
	{"#", "$SYS", false},
	{"+/monitor/Clients", "$SYS/monitor/Clients", false},
	{"+/monitor/Clients", "SYS/monitor/Clients", true},
	{"$SYS/#", "$SYS/monitor/Clients", true},
	{"$SYS/#", "$SYS", true},
	{"$SYS/monitor/+", "$SYS/monitor/Clients", true},
	{"+", "$", false},
	{"a/#", "a/$b", true}, // only the first level is special
	{"a/+", "a/$b", true},
	{"$share/g/x", "$share/g/x", true}, // literal, Match is non-shared
	// Literals: case-sensitive, no normalisation [MQTT-4.7.3-4].
	{"sport", "sport", true},
	{"sport", "Sport", false},
	{"sport", "sport/", false},
	{"sport/", "sport", false},
	{"/", "/", true},
	{"//", "/", false},
	{"a/b", "a/b/c", false},
	{"a/b/c", "a/b", false},
	{"a/b/#", "a", false},
	{"ab", "a", false},
}

func TestMatch(t *testing.T) {
	for _, tt := range matchTests {
		if err := ValidateFilter(tt.filter); err != nil {
			t.Errorf("test filter %q invalid: %v", tt.filter, err)
		}
		if got := Match(tt.filter, tt.name); got != tt.want {
			t.Errorf("Match(%q, %q) = %v, want %v", tt.filter, tt.name, got, tt.want)
		}
	}
}

func TestMatchInvalidNoPanic(t *testing.T) {
	for _, f := range []string{"", "#/a", "a#", "+a", "//#", "##", "$share/g"} {
		for _, n := range []string{"", "/", "a", "$", "a/b", "#", "+"} {
			Match(f, n)
		}
	}
}

func TestCovers(t *testing.T) {
	for _, tc := range []struct {
		outer, inner string
		want         bool
	}{
		{"#", "a/b", true}, {"#", "#", true}, {"a/#", "a", true}, {"a/#", "a/b/+", true},
		{"a/#", "a/#", true}, {"a/+", "a/b", true}, {"a/+", "a/+", true}, {"+/b", "x/b", true},
		{"+/b", "#", false}, {"a/+", "a/#", false}, {"a/+", "a/b/c", false}, {"a/b", "a/+", false},
		{"a/b", "a/b", true}, {"a/b", "a/c", false}, {"a", "a/b", false}, {"a/b", "a", false},
		{"sensors/#", "sensors/+/temp", true}, {"sensors/#", "other/x", false},
	} {
		if got := Covers(tc.outer, tc.inner); got != tc.want {
			t.Errorf("Covers(%q, %q) = %v, want %v", tc.outer, tc.inner, got, tc.want)
		}
	}
}
