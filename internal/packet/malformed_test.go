package packet

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

const (
	mal   = MalformedPacket
	proto = ProtocolError
	unsup = UnsupportedProtocolVersion
)

// badPackets are inputs the decoder must refuse, with the reason code the
// broker would report.
var badPackets = []struct {
	name    string
	version byte
	raw     []byte
	code    ReasonCode
}{
	// fixed header
	{"packet type 0", V311, h(`00 00`), mal},
	{"CONNECT flags not 0", V311, h(`11 00`), mal},
	{"PUBREL flags 0000", V311, h(`60 02 00 01`), mal},
	{"SUBSCRIBE flags 0000", V311, h(`80 06 00 01 00 01 "a" 00`), mal},
	{"UNSUBSCRIBE flags 0011", V311, h(`A3 05 00 01 00 01 "a"`), mal},
	{"PINGREQ flags 0001", V311, h(`C1 00`), mal},
	{"PUBLISH QoS 3", V311, h(`36 05 00 01 "t" 00 01`), mal},
	{"PUBLISH QoS 0 with DUP", V311, h(`38 03 00 01 "t"`), mal},
	{"remaining length 5 bytes", V311, h(`30 FF FF FF FF 7F`), mal},
	{"remaining length not minimal", V311, h(`C0 80 00`), mal},

	// strings
	{"topic length beyond packet", V311, h(`30 03 00 05 "a"`), mal},
	{"topic length truncated", V311, h(`30 01 00`), mal},
	{"topic invalid UTF-8", V311, h(`30 04 00 02 C3 28`), mal},
	{"topic U+0000", V311, h(`30 03 00 01 00`), mal},
	{"topic surrogate U+D800", V311, h(`30 05 00 03 ED A0 80`), mal},
	{"topic overlong encoding", V311, h(`30 04 00 02 C0 AF`), mal},
	{"client ID invalid UTF-8", V311, h(`10 0D 00 04 "MQTT" 04 02 00 3C 00 01 FF`), mal},

	// PUBLISH
	{"PUBLISH QoS 1 packet ID 0", V311, h(`32 05 00 01 "t" 00 00`), proto},
	{"PUBLISH QoS 2 packet ID truncated", V311, h(`34 04 00 01 "t" 00`), mal},
	{"PUBLISH v5 missing property length", V5, h(`30 03 00 01 "t"`), mal},
	{"PUBLISH v5 duplicate payload format", V5, h(`30 08 00 01 "t" 04 01 00 01 00`), proto},
	{"PUBLISH v5 duplicate topic alias", V5, h(`30 0A 00 01 "t" 06 23 00 01 23 00 02`), proto},
	{"PUBLISH v5 session expiry not allowed", V5, h(`30 09 00 01 "t" 05 11 00 00 00 01`), mal},
	{"PUBLISH v5 will delay not allowed", V5, h(`30 09 00 01 "t" 05 18 00 00 00 01`), mal},
	{"PUBLISH v5 unknown property 0x04", V5, h(`30 06 00 01 "t" 02 04 00`), mal},
	{"PUBLISH v5 property id with continuation bit", V5, h(`30 07 00 01 "t" 03 81 01 00`), mal},
	{"PUBLISH v5 property length beyond packet", V5, h(`30 05 00 01 "t" 09 01`), mal},
	{"PUBLISH v5 property value truncated", V5, h(`30 06 00 01 "t" 02 02 00`), mal},
	{"PUBLISH v5 payload format 2", V5, h(`30 06 00 01 "t" 02 01 02`), proto},
	{"PUBLISH v5 topic alias 0", V5, h(`30 07 00 01 "t" 03 23 00 00`), TopicAliasInvalid},
	{"PUBLISH v5 subscription ID 0", V5, h(`30 06 00 01 "t" 02 0B 00`), proto},
	{"PUBLISH v5 subscription ID 5 bytes", V5, h(`30 0A 00 01 "t" 06 0B FF FF FF FF 7F`), mal},
	{"PUBLISH v5 content type invalid UTF-8", V5, h(`30 08 00 01 "t" 04 03 00 01 FF`), mal},
	{"PUBLISH v5 user property value truncated", V5, h(`30 0B 00 01 "t" 07 26 00 01 "k" 00 05 "v"`), mal},

	// CONNECT
	{"CONNECT unknown protocol name", V311, h(`10 0E 00 04 "MQTX" 04 02 00 3C 00 02 "c1"`), proto},
	{"CONNECT MQTT level 6", V311, h(`10 0E 00 04 "MQTT" 06 02 00 3C 00 02 "c1"`), unsup},
	{"CONNECT MQTT level 3", V311, h(`10 0E 00 04 "MQTT" 03 02 00 3C 00 02 "c1"`), unsup},
	{"CONNECT MQIsdp level 4", V311, h(`10 10 00 06 "MQIsdp" 04 02 00 3C 00 02 "c1"`), unsup},
	{"CONNECT protocol name truncated", V311, h(`10 03 00 04 "M"`), mal},
	{"CONNECT reserved flag", V311, h(`10 0E 00 04 "MQTT" 04 03 00 3C 00 02 "c1"`), mal},
	{"CONNECT will QoS without will flag", V311, h(`10 0E 00 04 "MQTT" 04 0A 00 3C 00 02 "c1"`), mal},
	{"CONNECT will retain without will flag", V311, h(`10 0E 00 04 "MQTT" 04 22 00 3C 00 02 "c1"`), mal},
	{"CONNECT will QoS 3", V311, h(`10 16 00 04 "MQTT" 04 1E 00 3C 00 02 "c1" 00 01 "w" 00 01 "p"`), mal},
	{"CONNECT v311 password without username", V311, h(`10 12 00 04 "MQTT" 04 42 00 3C 00 02 "c1" 00 02 "pw"`), proto},
	{"CONNECT username flag without username", V311, h(`10 0E 00 04 "MQTT" 04 82 00 3C 00 02 "c1"`), mal},
	{"CONNECT will flag without will topic", V311, h(`10 0E 00 04 "MQTT" 04 06 00 3C 00 02 "c1"`), mal},
	{"CONNECT trailing bytes", V311, h(`10 0F 00 04 "MQTT" 04 02 00 3C 00 02 "c1" 00`), mal},
	{"CONNECT missing client ID", V311, h(`10 0A 00 04 "MQTT" 04 02 00 3C`), mal},
	{"CONNECT v5 receive maximum 0", V5, h(`10 12 00 04 "MQTT" 05 02 00 3C 03 21 00 00 00 02 "c1"`), proto},
	{"CONNECT v5 maximum packet size 0", V5, h(`10 14 00 04 "MQTT" 05 02 00 3C 05 27 00 00 00 00 00 02 "c1"`), proto},
	{"CONNECT v5 request problem info 2", V5, h(`10 11 00 04 "MQTT" 05 02 00 3C 02 17 02 00 02 "c1"`), proto},
	{"CONNECT v5 request response info 2", V5, h(`10 11 00 04 "MQTT" 05 02 00 3C 02 19 02 00 02 "c1"`), proto},
	{"CONNECT v5 auth data without method", V5, h(`10 13 00 04 "MQTT" 05 02 00 3C 04 16 00 01 AA 00 02 "c1"`), proto},
	{"CONNECT v5 duplicate session expiry", V5, h(`10 19 00 04 "MQTT" 05 02 00 3C 0A 11 00 00 00 01 11 00 00 00 02 00 02 "c1"`), proto},
	{"CONNECT v5 topic alias not allowed", V5, h(`10 12 00 04 "MQTT" 05 02 00 3C 03 23 00 01 00 02 "c1"`), mal},
	{"CONNECT v5 will property not allowed", V5, h(`10 1A 00 04 "MQTT" 05 06 00 3C 00 00 02 "c1" 05 11 00 00 00 01 00 01 "w" 00 00`), mal},
	{"CONNECT v5 will delay in connect properties", V5, h(`10 14 00 04 "MQTT" 05 02 00 3C 05 18 00 00 00 01 00 02 "c1"`), mal},
	{"CONNECT v5 missing property length", V5, h(`10 0A 00 04 "MQTT" 05 02 00 3C`), mal},

	// CONNACK
	{"CONNACK reserved flags", V311, h(`20 02 02 00`), mal},
	{"CONNACK v3 return code 6", V311, h(`20 02 00 06`), proto},
	{"CONNACK session present with error", V311, h(`20 02 01 05`), proto},
	{"CONNACK v3 trailing byte", V311, h(`20 03 00 00 00`), mal},
	{"CONNACK v5 missing property length", V5, h(`20 02 00 00`), mal},
	{"CONNACK v5 invalid reason code 0x10", V5, h(`20 03 00 10 00`), proto},
	{"CONNACK v5 maximum QoS 2", V5, h(`20 05 00 00 02 24 02`), proto},
	{"CONNACK v5 retain available 2", V5, h(`20 05 00 00 02 25 02`), proto},
	{"CONNACK v5 receive maximum 0", V5, h(`20 06 00 00 03 21 00 00`), proto},
	{"CONNACK v5 will delay not allowed", V5, h(`20 08 00 00 05 18 00 00 00 01`), mal},

	// PUBACK, PUBREC, PUBREL, PUBCOMP
	{"PUBACK packet ID 0", V311, h(`40 02 00 00`), proto},
	{"PUBACK v3 trailing byte", V311, h(`40 03 00 01 00`), mal},
	{"PUBACK truncated", V311, h(`40 01 00`), mal},
	{"PUBACK v5 invalid reason code", V5, h(`40 03 00 01 05`), proto},
	{"PUBREL v5 reason code 0x10 not allowed", V5, h(`62 03 00 01 10`), proto},
	{"PUBCOMP v5 properties not allowed", V5, h(`70 08 00 01 00 04 23 00 01`), mal},
	{"PUBREC v5 duplicate reason string", V5, h(`50 0C 00 01 00 08 1F 00 01 "a" 1F 00 01 "b"`), proto},
	{"PUBACK v5 property length beyond packet", V5, h(`40 04 00 01 00 05`), mal},

	// SUBSCRIBE
	{"SUBSCRIBE packet ID 0", V311, h(`82 06 00 00 00 01 "a" 00`), proto},
	{"SUBSCRIBE no filters", V311, h(`82 02 00 01`), proto},
	{"SUBSCRIBE v5 no filters", V5, h(`82 03 00 01 00`), proto},
	{"SUBSCRIBE missing options byte", V311, h(`82 05 00 01 00 01 "a"`), mal},
	{"SUBSCRIBE v3 reserved option bits", V311, h(`82 06 00 01 00 01 "a" 04`), mal},
	{"SUBSCRIBE QoS 3", V311, h(`82 06 00 01 00 01 "a" 03`), mal},
	{"SUBSCRIBE v5 QoS 3", V5, h(`82 07 00 01 00 00 01 "a" 03`), proto}, // MQTT 5.0 section 3.8.3.1
	{"SUBSCRIBE v5 reserved option bits", V5, h(`82 07 00 01 00 00 01 "a" 40`), mal},
	{"SUBSCRIBE v5 retain handling 3", V5, h(`82 07 00 01 00 00 01 "a" 30`), proto},
	{"SUBSCRIBE v5 two subscription IDs", V5, h(`82 0B 00 01 04 0B 01 0B 02 00 01 "a" 00`), proto},
	{"SUBSCRIBE v5 subscription ID 0", V5, h(`82 09 00 01 02 0B 00 00 01 "a" 00`), proto},
	{"SUBSCRIBE v5 reason string not allowed", V5, h(`82 0B 00 01 04 1F 00 01 "r" 00 01 "a" 00`), mal},
	{"SUBSCRIBE filter invalid UTF-8", V311, h(`82 06 00 01 00 01 FE 00`), mal},

	// SUBACK, UNSUBSCRIBE, UNSUBACK
	{"SUBACK no reason codes", V311, h(`90 02 00 01`), proto},
	{"SUBACK v3 code 0x87", V311, h(`90 03 00 01 87`), proto},
	{"SUBACK v5 code 0x03", V5, h(`90 04 00 01 00 03`), proto},
	{"SUBACK v5 no reason codes", V5, h(`90 03 00 01 00`), proto},
	{"UNSUBSCRIBE no filters", V311, h(`A2 02 00 01`), proto},
	{"UNSUBSCRIBE v5 no filters", V5, h(`A2 03 00 01 00`), proto},
	{"UNSUBSCRIBE packet ID 0", V311, h(`A2 05 00 00 00 01 "a"`), proto},
	{"UNSUBSCRIBE filter truncated", V311, h(`A2 05 00 01 00 03 "a"`), mal},
	{"UNSUBSCRIBE v5 subscription ID not allowed", V5, h(`A2 08 00 01 02 0B 01 00 01 "a"`), mal},
	{"UNSUBACK v3 with reason codes", V311, h(`B0 03 00 01 00`), mal},
	{"UNSUBACK v5 no reason codes", V5, h(`B0 03 00 01 00`), proto},
	{"UNSUBACK v5 code 0x10", V5, h(`B0 04 00 01 00 10`), proto},

	// PINGREQ, PINGRESP, DISCONNECT, AUTH
	{"PINGREQ with body", V311, h(`C0 01 00`), mal},
	{"PINGRESP with body", V5, h(`D0 01 00`), mal},
	{"DISCONNECT v3 with body", V311, h(`E0 01 00`), mal},
	{"DISCONNECT v5 reason code 0x01", V5, h(`E0 01 01`), proto},
	{"DISCONNECT v5 property length beyond packet", V5, h(`E0 02 00 05`), mal},
	{"DISCONNECT v5 trailing after properties", V5, h(`E0 03 00 00 00`), mal},
	{"DISCONNECT v5 topic alias not allowed", V5, h(`E0 05 00 03 23 00 01`), mal},
	{"AUTH in v3.1.1", V311, h(`F0 00`), mal},
	{"AUTH in v3.1", V31, h(`F0 00`), mal},
	{"AUTH v5 reason code 0x00 with session expiry", V5, h(`F0 07 00 05 11 00 00 00 01`), mal},
	{"AUTH v5 reason code 0x01", V5, h(`F0 01 01`), proto},
	{"AUTH v5 duplicate method", V5, h(`F0 0A 18 08 15 00 01 "a" 15 00 01 "b"`), proto},

	// version given by the caller
	{"unknown connection version", 6, h(`C0 00`), unsup},
}

func TestMalformed(t *testing.T) {
	for _, b := range badPackets {
		t.Run(b.name, func(t *testing.T) {
			p, err := decodeRaw(b.raw, b.version)
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("got %#v, %v; want *Error with code 0x%02X", p, err, byte(b.code))
			}
			if e.Code != b.code {
				t.Fatalf("code 0x%02X (%s), want 0x%02X", byte(e.Code), e.Reason, byte(b.code))
			}
			if p != nil && e.Code != UnsupportedProtocolVersion && !isV5Connect(p) {
				t.Fatalf("packet %#v returned with error", p)
			}
		})
	}
}

// isV5Connect reports the partial CONNECT that comes with the error of a
// malformed MQTT 5 CONNECT.
func isV5Connect(p Packet) bool {
	c, ok := p.(*Connect)
	return ok && c.ProtocolVersion == V5 && c.ClientID == "" && !c.HasUsername && c.Will == nil
}

// A malformed MQTT 5 CONNECT still tells its level (the server may answer
// CONNACK 0x81); a 3.1.1 one does not.
func TestMalformedV5ConnectReturnsLevel(t *testing.T) {
	p, err := decodeRaw(h(`10 0F 00 04 "MQTT" 05 02 00 3C 00 00 02 FF FE`), 0)
	var e *Error
	if c, ok := p.(*Connect); !ok || c.ProtocolVersion != V5 || !errors.As(err, &e) || e.Code != MalformedPacket {
		t.Fatalf("got %#v, %v; want a v5 Connect and 0x81", p, err)
	}
	if p, err := decodeRaw(h(`10 0E 00 04 "MQTT" 04 02 00 3C 00 02 FF FE`), 0); p != nil || err == nil {
		t.Fatalf("3.1.1: got %#v, %v; want no packet and an error", p, err)
	}
}

func TestUnsupportedVersionReturnsConnect(t *testing.T) {
	p, err := decodeRaw(h(`10 0E 00 04 "MQTT" 06 02 00 3C 00 02 "c1"`), 0)
	c, ok := p.(*Connect)
	if !ok || c.ProtocolName != "MQTT" || c.ProtocolVersion != 6 {
		t.Fatalf("got %#v, %v", p, err)
	}
}

func TestReadFixedHeader(t *testing.T) {
	if _, err := ReadFixedHeader(bytes.NewReader(nil)); err != io.EOF {
		t.Fatalf("empty input: %v, want io.EOF", err)
	}
	for _, raw := range [][]byte{h(`30`), h(`30 80`), h(`30 FF FF FF`)} {
		if _, err := ReadFixedHeader(bytes.NewReader(raw)); err != io.ErrUnexpectedEOF {
			t.Fatalf("% X: %v, want io.ErrUnexpectedEOF", raw, err)
		}
	}
	for _, c := range []struct {
		raw []byte
		n   int
	}{
		{h(`30 00`), 0}, {h(`30 7F`), 127}, {h(`30 80 01`), 128}, {h(`30 FF 7F`), 16383},
		{h(`30 80 80 01`), 16384}, {h(`30 FF FF 7F`), 2097151}, {h(`30 80 80 80 01`), 2097152},
		{h(`30 FF FF FF 7F`), MaxRemaining},
	} {
		fh, err := ReadFixedHeader(bytes.NewReader(c.raw))
		if err != nil || fh.Remaining != c.n || fh.Type != PUBLISH {
			t.Fatalf("% X: %+v, %v; want remaining %d", c.raw, fh, err, c.n)
		}
		if got := AppendVarint(nil, c.n); !bytes.Equal(got, c.raw[1:]) || varintLen(c.n) != len(got) {
			t.Fatalf("AppendVarint(%d) = % X", c.n, got)
		}
	}
}

func TestDecodeLengthMismatch(t *testing.T) {
	_, err := Decode(FixedHeader{Type: PINGREQ, Remaining: 1}, nil, V311)
	if e, ok := err.(*Error); !ok || e.Code != MalformedPacket {
		t.Fatalf("got %v", err)
	}
	_, err = Decode(FixedHeader{Type: PUBREL, Remaining: 2}, []byte{0, 1}, V311) // flags 0
	if e, ok := err.(*Error); !ok || e.Code != MalformedPacket {
		t.Fatalf("got %v", err)
	}
}

func TestValidUTF8(t *testing.T) {
	for s, want := range map[string]bool{
		"": true, "a/b": true, "ü€😀": true, "\uFFFF": true,
		"a\x00b": false, "\xed\xa0\x80": false, "\xff": false, "\xc0\xaf": false,
	} {
		if ValidUTF8(s) != want {
			t.Errorf("ValidUTF8(%q) = %v", s, !want)
		}
	}
}

func TestAppendErrors(t *testing.T) {
	long := strings.Repeat("a", 65536)
	cases := []struct {
		name    string
		p       Packet
		version byte
		code    ReasonCode
	}{
		{"topic too long", &Publish{Topic: long}, V311, mal},
		{"QoS 3", &Publish{Topic: "t", QoS: 3, PacketID: 1}, V311, mal},
		{"QoS 0 with DUP", &Publish{Topic: "t", Dup: true}, V311, mal},
		{"QoS 1 packet ID 0", &Publish{Topic: "t", QoS: 1}, V5, mal},
		{"user property too long", &Publish{Topic: "t", Properties: Properties{UserProperties: up("k", long)}}, V5, mal},
		{"correlation data too long", &Publish{Topic: "t", Properties: Properties{CorrelationData: []byte(long)}}, V5, mal},
		{"subscription ID 0", &Publish{Topic: "t", Properties: Properties{SubscriptionIDs: []int{0}}}, V5, mal},
		{"subscription ID too big", &Publish{Topic: "t", Properties: Properties{SubscriptionIDs: []int{MaxRemaining + 1}}}, V5, mal},
		{"two subscription IDs in SUBSCRIBE", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a"}},
			Properties: Properties{SubscriptionIDs: []int{1, 2}}}, V5, mal},
		{"SUBSCRIBE without filters", &Subscribe{PacketID: 1}, V311, mal},
		{"SUBSCRIBE QoS 3", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a", QoS: 3}}}, V311, mal},
		{"SUBSCRIBE retain handling 3", &Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "a", RetainHandling: 3}}}, V5, mal},
		{"UNSUBSCRIBE without filters", &Unsubscribe{PacketID: 1}, V5, mal},
		{"SUBACK without codes", &Suback{PacketID: 1}, V5, mal},
		{"UNSUBACK v5 without codes", &Unsuback{PacketID: 1}, V5, mal},
		{"ack packet ID 0", &Ack{Kind: PUBACK}, V311, mal},
		{"ack of wrong kind", &Ack{Kind: PUBLISH, PacketID: 1}, V311, mal},
		{"v3 CONNACK code 0x87", &Connack{ReasonCode: NotAuthorized}, V311, mal},
		{"CONNECT name and level disagree", &Connect{ProtocolName: "MQIsdp", ProtocolVersion: V311}, V311, mal},
		{"CONNECT v311 password without username", &Connect{HasPassword: true}, V311, mal},
		{"CONNECT will QoS 3", &Connect{Will: &Will{QoS: 3}}, V5, mal},
		{"CONNECT unknown level", &Connect{ProtocolVersion: 6}, V5, unsup},
		{"AUTH in v3", &Auth{}, V311, mal},
		{"unknown version", &Pingreq{}, 0, unsup},
		{"nil packet", nil, V5, mal},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dst := []byte{1, 2}
			out, err := Append(dst, c.p, c.version)
			e, ok := err.(*Error)
			if !ok || e.Code != c.code {
				t.Fatalf("err = %v, want code 0x%02X", err, byte(c.code))
			}
			if !bytes.Equal(out, dst) {
				t.Fatalf("dst changed on error: % X", out)
			}
			if _, err := Size(c.p, c.version); err == nil {
				t.Fatal("Size succeeded")
			}
		})
	}
}

// TestAppendConveniences covers what the encoder does beyond mirroring the
// decoder: dropping properties the packet may not carry, v5 SUBACK failure
// codes in 3.x, CONNECT defaults, and Authentication Data forcing a method.
func TestAppendConveniences(t *testing.T) {
	check := func(name string, p Packet, version byte, want []byte) {
		t.Helper()
		got, err := Append(nil, p, version)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s: % X, %v; want % X", name, got, err, want)
		}
	}
	check("will properties reused on PUBLISH", &Publish{Topic: "t", Properties: Properties{
		WillDelay: p32(5), SessionExpiry: p32(1), ContentType: "c"}}, V5,
		h(`30 08 00 01 "t" 04 03 00 01 "c"`))
	check("properties ignored in v3", &Publish{Topic: "t", Properties: Properties{ContentType: "c"}}, V311,
		h(`30 03 00 01 "t"`))
	check("v5 options ignored in v3", &Subscribe{PacketID: 1, Subscriptions: []Subscription{
		{Filter: "a", QoS: 1, NoLocal: true, RetainHandling: 2}}}, V311, h(`82 06 00 01 00 01 "a" 01`))
	check("v5 failure codes map to 0x80 in v3 SUBACK", &Suback{PacketID: 1,
		ReasonCodes: []ReasonCode{GrantedQoS1, NotAuthorized}}, V311, h(`90 04 00 01 01 80`))
	check("v3 UNSUBACK drops codes", &Unsuback{PacketID: 1, ReasonCodes: []ReasonCode{Success}}, V311, h(`B0 02 00 01`))
	check("v3 DISCONNECT drops reason", &Disconnect{ReasonCode: ServerShuttingDown}, V311, h(`E0 00`))
	check("CONNECT level from the version argument", &Connect{ClientID: "c"}, V5,
		h(`10 0E 00 04 "MQTT" 05 00 00 00 00 00 01 "c"`))
	check("auth data forces a method", &Auth{ReasonCode: ContinueAuthentication,
		Properties: Properties{AuthData: []byte{1}}}, V5, h(`F0 09 18 07 15 00 00 16 00 01 01`))
	check("empty user property in ack forces the long form", &Ack{Kind: PUBACK, PacketID: 1,
		Properties: Properties{UserProperties: up("", "")}}, V5, h(`40 09 00 01 00 05 26 00 00 00 00`))
}
