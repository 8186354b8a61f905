package cluster

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/topic"
)

func TestMessageRoundTrip(t *testing.T) {
	ct := "application/json"
	exp := time.Unix(1_900_000_000, 123_000_000)
	for _, m := range []*session.Message{
		{Topic: "a/b", Payload: []byte("x")},
		{Topic: "a/b/c", Payload: bytes.Repeat([]byte{0xff}, 70000), QoS: 2, Retain: true, Publisher: "pub-1", Expiry: exp,
			Props: packet.Properties{ContentType: ct, ResponseTopic: "re/ply", CorrelationData: []byte{1, 2},
				UserProperties: []packet.UserProperty{{Key: "k", Value: "v"}}}},
		{Topic: "$SYS/x", Payload: nil, QoS: 1, Publisher: ""},
	} {
		b, err := encodeMessage(nil, header{instance: 7, seq: 9}, m)
		if err != nil {
			t.Fatalf("encode %q: %v", m.Topic, err)
		}
		h, got, err := decodeMessage(b)
		if err != nil {
			t.Fatalf("decode %q: %v", m.Topic, err)
		}
		if h.instance != 7 || h.seq != 9 {
			t.Fatalf("header %+v", h)
		}
		if got.Topic != m.Topic || !bytes.Equal(got.Payload, m.Payload) || got.QoS != m.QoS || got.Retain != m.Retain ||
			got.Publisher != m.Publisher || !got.Expiry.Equal(m.Expiry) || got.Props.ContentType != m.Props.ContentType ||
			got.Props.ResponseTopic != m.Props.ResponseTopic || !bytes.Equal(got.Props.CorrelationData, m.Props.CorrelationData) ||
			!slices.Equal(got.Props.UserProperties, m.Props.UserProperties) {
			t.Fatalf("round trip:\n got %+v\nwant %+v", got, m)
		}
		if got.Props.MessageExpiry != nil {
			t.Fatalf("message expiry travels as Expiry, not as a property")
		}
	}
}

// A message carries its name: by its header, or, routed again under the
// name another node gave it, explicitly (version 2).
func TestMessageNameRoundTrip(t *testing.T) {
	for _, c := range []struct {
		name    session.Origin
		version byte
	}{
		{session.Origin{}, wireVersion},
		{session.Origin{Instance: 7, Seq: 9}, wireVersion},
		{session.Origin{Instance: 3, Seq: 41}, wireVersionNamed},
	} {
		m := &session.Message{Topic: "a", Payload: []byte("p"), QoS: 2, Origin: c.name}
		b, err := encodeMessage(nil, header{instance: 7, seq: 9}, m)
		if err != nil {
			t.Fatal(err)
		}
		if b[0] != c.version {
			t.Fatalf("name %v written as version %d, want %d", c.name, b[0], c.version)
		}
		h, got, err := decodeMessage(b)
		if err != nil {
			t.Fatal(err)
		}
		want := c.name
		if want.IsZero() {
			want = session.Origin{Instance: 7, Seq: 9}
		}
		if h != (header{7, 9}) || got.Origin != want || string(got.Payload) != "p" {
			t.Fatalf("name %v: decoded header %+v, name %v, payload %q", c.name, h, got.Origin, got.Payload)
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := encodeMessage(nil, header{1, 1}, &session.Message{Topic: "t", Payload: []byte("p"), QoS: 1})
	for name, b := range map[string][]byte{
		"empty":          nil,
		"short":          good[:10],
		"version":        append([]byte{9}, good[1:]...),
		"publisher":      append(append([]byte{}, good[:25]...), 0xff, 0xff, 0x7f),
		"truncated":      good[:len(good)-1],
		"trailing bytes": append(append([]byte{}, good...), 0),
	} {
		if _, _, err := decodeMessage(b); err == nil {
			t.Errorf("%s: decoded without error", name)
		}
	}
}

// FuzzDecodeMessage feeds arbitrary bytes to the backplane decoder: an
// error or a message with a valid topic, never a panic. Seeds are in
// testdata/fuzz/FuzzDecodeMessage.
func FuzzDecodeMessage(f *testing.F) {
	for _, m := range []*session.Message{
		{Topic: "a/b", Payload: []byte("hello"), QoS: 1, Retain: true, Publisher: "c"},
		{Topic: "x", Props: packet.Properties{ContentType: "text/plain"}},
	} {
		b, _ := encodeMessage(nil, header{1, 2}, m)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		_, m, err := decodeMessage(b)
		if err != nil {
			return
		}
		if topic.ValidateName(m.Topic) != nil {
			t.Fatalf("decoded an invalid topic %q", m.Topic)
		}
		again, err := encodeMessage(nil, header{}, m)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		if _, m2, err := decodeMessage(again); err != nil || m2.Topic != m.Topic || !bytes.Equal(m2.Payload, m.Payload) {
			t.Fatalf("re-decode: %v", err)
		}
	})
}

func TestSubjects(t *testing.T) {
	for _, c := range []struct{ topic, subject string }{
		{"a/b", "stl.m.a.b"},
		{"a//b", "stl.m.a.~.b"},
		{"a.b/c d", "stl.m.~YS5i.~YyBk"},
		{"*/>", "stl.m.~Kg.~Pg"},
		{"$SYS/uptime", "stl.m.$SYS.uptime"},
		{"~x", "stl.m.~fng"},
	} {
		if got := topicSubject(c.topic); got != c.subject {
			t.Errorf("topicSubject(%q) = %q, want %q", c.topic, got, c.subject)
		}
	}
	for _, c := range []struct {
		filter string
		want   []string
	}{
		{"a/+/c", []string{"stl.m.a.*.c"}},
		{"a/#", []string{"stl.m.a", "stl.m.a.>"}},
		{"#", []string{"stl.m.>"}},
		{"+/x.y", []string{"stl.m.*.~eC55"}},
	} {
		if got := filterSubjects(c.filter); !slices.Equal(got, c.want) {
			t.Errorf("filterSubjects(%q) = %q, want %q", c.filter, got, c.want)
		}
	}
}

// TestSubjectsAgreeWithTopicMatching checks that every topic an MQTT filter
// matches is carried by one of the filter's subjects, so interest on the
// backplane never loses a message (it may carry more: the receiving node's
// own matching is exact).
func TestSubjectsAgreeWithTopicMatching(t *testing.T) {
	topics := []string{"a", "a/b", "a/b/c", "a//c", "/a", "a/", "x.y/z", "$SYS/a", "a/b c/d", "~/a"}
	filters := []string{"#", "+", "a/#", "a/+", "a/+/c", "+/+", "/+", "a/", "x.y/#", "$SYS/#", "+/b c/+", "~/#"}
	for _, f := range filters {
		for _, tp := range topics {
			if !topic.Match(f, tp) {
				continue
			}
			subj := topicSubject(tp)
			ok := false
			for _, s := range filterSubjects(f) {
				ok = ok || natsMatch(s, subj)
			}
			if !ok {
				t.Errorf("filter %q matches topic %q but its subjects %q do not carry %q", f, tp, filterSubjects(f), subj)
			}
		}
	}
}

// natsMatch is NATS subject matching: '*' one token, '>' one or more.
func natsMatch(pattern, subject string) bool {
	p, s := splitDots(pattern), splitDots(subject)
	for i, tok := range p {
		if tok == ">" {
			return len(s) > i
		}
		if i >= len(s) || (tok != "*" && tok != s[i]) {
			return false
		}
	}
	return len(p) == len(s)
}

func splitDots(s string) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

func TestFuzzCorpusPresent(t *testing.T) {
	ents, err := os.ReadDir(filepath.Join("testdata", "fuzz", "FuzzDecodeMessage"))
	if err != nil || len(ents) == 0 {
		t.Fatalf("seed corpus missing in testdata/fuzz/FuzzDecodeMessage: %v", err)
	}
}
