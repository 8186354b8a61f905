package packet

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"
)

// h turns hand-written wire bytes into a slice: hex pairs separated by
// spaces, and "quoted" runs of ASCII copied as is.
func h(s string) []byte {
	var out []byte
	for i := 0; i < len(s); {
		switch c := s[i]; {
		case c == ' ' || c == '\n' || c == '\t':
			i++
		case c == '"':
			j := i + 1
			for s[j] != '"' {
				j++
			}
			out = append(out, s[i+1:j]...)
			i = j + 1
		default:
			var b byte
			if _, err := fmt.Sscanf(s[i:i+2], "%02x", &b); err != nil {
				panic("bad hex " + s[i:i+2])
			}
			out = append(out, b)
			i += 2
		}
	}
	return out
}

func p8(v byte) *byte      { return &v }
func p16(v uint16) *uint16 { return &v }
func p32(v uint32) *uint32 { return &v }
func bs(s string) []byte   { return []byte(s) }
func up(kv ...string) []UserProperty {
	var u []UserProperty
	for i := 0; i < len(kv); i += 2 {
		u = append(u, UserProperty{kv[i], kv[i+1]})
	}
	return u
}

// goldenPackets is the one table of wire examples, written by hand from the
// 3.1, 3.1.1 and 5.0 specifications. It feeds the decode and encode tests,
// the fuzz seeds and the benchmarks. decodeOnly marks non-canonical forms the
// decoder accepts but the encoder never produces.
var goldenPackets = []struct {
	name       string
	version    byte
	raw        []byte
	pkt        Packet
	decodeOnly bool
}{
	// CONNECT
	{"connect v311 minimal", V311,
		h(`10 0E 00 04 "MQTT" 04 02 00 3C 00 02 "c1"`),
		&Connect{ProtocolName: "MQTT", ProtocolVersion: V311, CleanStart: true, KeepAlive: 60, ClientID: "c1"}, false},
	{"connect v31 will user password", V31,
		h(`10 21 00 06 "MQIsdp" 03 EE 00 0A 00 02 "id" 00 03 "w/t" 00 03 "bye" 00 01 "u" 00 02 "pw"`),
		&Connect{ProtocolName: "MQIsdp", ProtocolVersion: V31, CleanStart: true, KeepAlive: 10, ClientID: "id",
			Will:        &Will{Topic: "w/t", Payload: bs("bye"), QoS: 1, Retain: true},
			HasUsername: true, Username: "u", HasPassword: true, Password: bs("pw")}, false},
	{"connect v311 will qos2 empty payload username only", V311,
		h(`10 17 00 04 "MQTT" 04 94 00 00 00 00 00 01 "a" 00 00 00 04 "user"`),
		&Connect{ProtocolName: "MQTT", ProtocolVersion: V311, ClientID: "",
			Will:        &Will{Topic: "a", QoS: 2},
			HasUsername: true, Username: "user"}, false},
	{"connect v5 all properties, will properties, password without username", V5,
		h(`10 65 00 04 "MQTT" 05 76 00 1E
			25 11 00 00 00 78  15 00 02 "m1"  16 00 02 01 02  17 00  19 01  21 00 0A  22 00 05
			   26 00 01 "k" 00 01 "v"  27 00 00 10 00
			00 03 "cid"
			23 01 01  02 00 00 00 3C  03 00 04 "text"  08 00 01 "r"  09 00 02 AB CD  18 00 00 00 05
			   26 00 01 "a" 00 01 "b"
			00 02 "lw" 00 01 "X" 00 03 "sec"`),
		&Connect{ProtocolName: "MQTT", ProtocolVersion: V5, CleanStart: true, KeepAlive: 30, ClientID: "cid",
			Properties: Properties{SessionExpiry: p32(120), AuthMethod: "m1", AuthData: []byte{1, 2},
				RequestProblemInfo: p8(0), RequestResponseInfo: p8(1), ReceiveMaximum: p16(10),
				TopicAliasMaximum: p16(5), UserProperties: up("k", "v"), MaximumPacketSize: p32(4096)},
			Will: &Will{Topic: "lw", Payload: bs("X"), QoS: 2, Retain: true, Properties: Properties{
				PayloadFormat: p8(1), MessageExpiry: p32(60), ContentType: "text", ResponseTopic: "r",
				CorrelationData: []byte{0xAB, 0xCD}, WillDelay: p32(5), UserProperties: up("a", "b")}},
			HasPassword: true, Password: bs("sec")}, false},
	{"connect v5 minimal", V5,
		h(`10 0E 00 04 "MQTT" 05 02 00 00 00 00 01 "x"`),
		&Connect{ProtocolName: "MQTT", ProtocolVersion: V5, CleanStart: true, ClientID: "x"}, false},

	// CONNACK
	{"connack v311 session present", V311, h(`20 02 01 00`), &Connack{SessionPresent: true}, false},
	{"connack v31 not authorized", V31, h(`20 02 00 05`), &Connack{ReasonCode: V3NotAuthorized}, false},
	{"connack v5 all properties", V5,
		h(`20 43 00 00 40
			11 00 00 01 00  12 00 02 "ab"  13 00 3C  15 00 01 "m"  16 00 01 FF  1A 00 02 "ri"
			1C 00 02 "sr"  1F 00 02 "ok"  21 00 14  22 00 0A  24 01  25 00  26 00 01 "x" 00 01 "y"
			27 00 01 00 00  28 01  29 00  2A 01`),
		&Connack{Properties: Properties{SessionExpiry: p32(256), AssignedClientID: "ab", ServerKeepAlive: p16(60),
			AuthMethod: "m", AuthData: []byte{0xFF}, ResponseInfo: "ri", ServerReference: "sr", ReasonString: "ok",
			ReceiveMaximum: p16(20), TopicAliasMaximum: p16(10), MaximumQoS: p8(1), RetainAvailable: p8(0),
			UserProperties: up("x", "y"), MaximumPacketSize: p32(65536), WildcardSubAvailable: p8(1),
			SubIDAvailable: p8(0), SharedSubAvailable: p8(1)}}, false},
	{"connack v5 bad username or password", V5, h(`20 03 00 86 00`), &Connack{ReasonCode: BadUsernameOrPassword}, false},

	// PUBLISH
	{"publish v311 qos0", V311, h(`30 07 00 03 "a/b" "hi"`), &Publish{Topic: "a/b", Payload: bs("hi")}, false},
	{"publish v311 qos0 multibyte topic empty payload", V311, h(`30 08 00 06 C3 BC 2F E2 82 AC`),
		&Publish{Topic: "ü/€"}, false},
	{"publish v311 qos1 dup retain", V311, h(`3B 06 00 01 "t" 00 0A "x"`),
		&Publish{Dup: true, QoS: 1, Retain: true, Topic: "t", PacketID: 10, Payload: bs("x")}, false},
	{"publish v31 qos2 empty payload", V31, h(`34 05 00 01 "t" 00 01`),
		&Publish{QoS: 2, Topic: "t", PacketID: 1}, false},
	{"publish v5 qos1 all properties", V5,
		h(`32 3E 00 03 "t/1" 00 07
			31 01 01  02 00 00 0E 10  03 00 04 "json"  08 00 03 "r/1"  09 00 03 01 02 03  0B 01  0B 80 01
			   23 00 02  26 00 01 "k" 00 01 "v"  26 00 01 "k" 00 02 "v2"
			"hello"`),
		&Publish{QoS: 1, Topic: "t/1", PacketID: 7, Payload: bs("hello"), Properties: Properties{
			PayloadFormat: p8(1), MessageExpiry: p32(3600), ContentType: "json", ResponseTopic: "r/1",
			CorrelationData: []byte{1, 2, 3}, SubscriptionIDs: []int{1, 128}, TopicAlias: p16(2),
			UserProperties: up("k", "v", "k", "v2")}}, false},
	{"publish v5 topic alias empty topic", V5, h(`30 07 00 00 03 23 00 01 "p"`),
		&Publish{Payload: bs("p"), Properties: Properties{TopicAlias: p16(1)}}, false},

	// PUBACK, PUBREC, PUBREL, PUBCOMP
	{"puback v311", V311, h(`40 02 00 01`), &Ack{Kind: PUBACK, PacketID: 1}, false},
	{"pubrec v311", V311, h(`50 02 00 02`), &Ack{Kind: PUBREC, PacketID: 2}, false},
	{"pubrel v31", V31, h(`62 02 00 03`), &Ack{Kind: PUBREL, PacketID: 3}, false},
	{"pubcomp v311", V311, h(`70 02 00 04`), &Ack{Kind: PUBCOMP, PacketID: 4}, false},
	{"puback v5 short form", V5, h(`40 02 00 05`), &Ack{Kind: PUBACK, PacketID: 5}, false},
	{"pubrec v5 reason only", V5, h(`50 03 00 06 10`), &Ack{Kind: PUBREC, PacketID: 6, ReasonCode: NoMatchingSubscribers}, false},
	{"pubrel v5 reason and properties", V5,
		h(`62 12 00 07 92 0E 1F 00 04 "gone" 26 00 01 "a" 00 01 "b"`),
		&Ack{Kind: PUBREL, PacketID: 7, ReasonCode: PacketIDNotFound,
			Properties: Properties{ReasonString: "gone", UserProperties: up("a", "b")}}, false},
	{"pubcomp v5 short form", V5, h(`70 02 00 08`), &Ack{Kind: PUBCOMP, PacketID: 8}, false},
	{"puback v5 long form of success", V5, h(`40 04 00 09 00 00`), &Ack{Kind: PUBACK, PacketID: 9}, true},
	{"pubcomp v5 success with properties", V5, h(`70 08 00 0A 00 04 1F 00 01 "x"`),
		&Ack{Kind: PUBCOMP, PacketID: 10, Properties: Properties{ReasonString: "x"}}, false},

	// SUBSCRIBE, SUBACK
	{"subscribe v311 two filters", V311, h(`82 0E 00 0A 00 03 "a/+" 01 00 03 "b/#" 02`),
		&Subscribe{PacketID: 10, Subscriptions: []Subscription{{Filter: "a/+", QoS: 1}, {Filter: "b/#", QoS: 2}}}, false},
	{"subscribe v31 one filter", V31, h(`82 06 00 01 00 01 "x" 00`),
		&Subscribe{PacketID: 1, Subscriptions: []Subscription{{Filter: "x"}}}, false},
	{"subscribe v5 options and properties", V5,
		h(`82 20 00 0B 0C 0B FF FF FF 7F 26 00 01 "k" 00 01 "v"
			00 01 "a" 2D  00 0A "$share/g/t" 12`),
		&Subscribe{PacketID: 11, Properties: Properties{SubscriptionIDs: []int{MaxRemaining}, UserProperties: up("k", "v")},
			Subscriptions: []Subscription{
				{Filter: "a", QoS: 1, NoLocal: true, RetainAsPublished: true, RetainHandling: 2},
				{Filter: "$share/g/t", QoS: 2, RetainHandling: 1}}}, false},
	{"suback v311", V311, h(`90 05 00 0A 01 02 80`),
		&Suback{PacketID: 10, ReasonCodes: []ReasonCode{GrantedQoS1, GrantedQoS2, UnspecifiedError}}, false},
	{"suback v5 with reason string", V5, h(`90 0B 00 0B 05 1F 00 02 "no" 00 87 A2`),
		&Suback{PacketID: 11, Properties: Properties{ReasonString: "no"},
			ReasonCodes: []ReasonCode{Success, NotAuthorized, WildcardSubNotSupported}}, false},

	// UNSUBSCRIBE, UNSUBACK
	{"unsubscribe v311", V311, h(`A2 0A 00 03 00 01 "a" 00 03 "b/c"`),
		&Unsubscribe{PacketID: 3, Filters: []string{"a", "b/c"}}, false},
	{"unsubscribe v5 user property with empty value", V5, h(`A2 0C 00 04 06 26 00 01 "k" 00 00 00 01 "a"`),
		&Unsubscribe{PacketID: 4, Properties: Properties{UserProperties: up("k", "")}, Filters: []string{"a"}}, false},
	{"unsuback v311", V311, h(`B0 02 00 03`), &Unsuback{PacketID: 3}, false},
	{"unsuback v5", V5, h(`B0 05 00 04 00 00 11`),
		&Unsuback{PacketID: 4, ReasonCodes: []ReasonCode{Success, NoSubscriptionExisted}}, false},
	{"unsuback v5 with reason string", V5, h(`B0 08 00 05 04 1F 00 01 "r" 87`),
		&Unsuback{PacketID: 5, Properties: Properties{ReasonString: "r"}, ReasonCodes: []ReasonCode{NotAuthorized}}, false},

	// The 3.1 and 3.1.1 forms of these are identical; each version is still
	// listed so that every packet type is exercised in every version.
	{"puback v31", V31, h(`40 02 12 34`), &Ack{Kind: PUBACK, PacketID: 0x1234}, false},
	{"pubrec v31", V31, h(`50 02 FF FF`), &Ack{Kind: PUBREC, PacketID: 0xFFFF}, false},
	{"pubrel v311", V311, h(`62 02 00 0B`), &Ack{Kind: PUBREL, PacketID: 11}, false},
	{"pubcomp v31", V31, h(`70 02 00 0C`), &Ack{Kind: PUBCOMP, PacketID: 12}, false},
	{"suback v31", V31, h(`90 03 00 01 00`), &Suback{PacketID: 1, ReasonCodes: []ReasonCode{Success}}, false},
	{"unsubscribe v31", V31, h(`A2 05 00 02 00 01 "#"`), &Unsubscribe{PacketID: 2, Filters: []string{"#"}}, false},
	{"unsuback v31", V31, h(`B0 02 00 02`), &Unsuback{PacketID: 2}, false},
	{"pingreq v5", V5, h(`C0 00`), &Pingreq{}, false},
	{"pingresp v31", V31, h(`D0 00`), &Pingresp{}, false},
	{"pingresp v311", V311, h(`D0 00`), &Pingresp{}, false},
	{"disconnect v31", V31, h(`E0 00`), &Disconnect{}, false},

	// PINGREQ, PINGRESP
	{"pingreq v311", V311, h(`C0 00`), &Pingreq{}, false},
	{"pingreq v31", V31, h(`C0 00`), &Pingreq{}, false},
	{"pingresp v5", V5, h(`D0 00`), &Pingresp{}, false},

	// DISCONNECT
	{"disconnect v311", V311, h(`E0 00`), &Disconnect{}, false},
	{"disconnect v5 normal", V5, h(`E0 00`), &Disconnect{}, false},
	{"disconnect v5 reason only", V5, h(`E0 01 04`), &Disconnect{ReasonCode: DisconnectWithWill}, false},
	{"disconnect v5 properties", V5,
		h(`E0 1B 9C 19 11 00 00 00 00 1C 00 04 "host" 1F 00 03 "bye" 26 00 01 "a" 00 01 "b"`),
		&Disconnect{ReasonCode: UseAnotherServer, Properties: Properties{SessionExpiry: p32(0),
			ServerReference: "host", ReasonString: "bye", UserProperties: up("a", "b")}}, false},
	{"disconnect v5 long form of success", V5, h(`E0 02 00 00`), &Disconnect{}, true},

	// AUTH
	{"auth v5 empty", V5, h(`F0 00`), &Auth{}, false},
	{"auth v5 reason only", V5, h(`F0 01 19`), &Auth{ReasonCode: ReAuthenticate}, false},
	{"auth v5 continue with properties", V5,
		h(`F0 1B 18 19 15 00 05 "scram" 16 00 03 01 02 03 1F 00 01 "z" 26 00 01 "a" 00 01 "b"`),
		&Auth{ReasonCode: ContinueAuthentication, Properties: Properties{AuthMethod: "scram",
			AuthData: []byte{1, 2, 3}, ReasonString: "z", UserProperties: up("a", "b")}}, false},
}

// decodeRaw reads a whole packet from raw, as a connection's read loop does.
func decodeRaw(raw []byte, version byte) (Packet, error) {
	r := bytes.NewReader(raw)
	fh, err := ReadFixedHeader(r)
	if err != nil {
		return nil, err
	}
	if fh.Remaining > r.Len() {
		return nil, malformed("test: truncated body")
	}
	body := raw[len(raw)-r.Len():]
	if len(body) != fh.Remaining {
		return nil, malformed("test: trailing bytes after packet")
	}
	return Decode(fh, body, version)
}

func TestGoldenDecode(t *testing.T) {
	for _, g := range goldenPackets {
		t.Run(g.name, func(t *testing.T) {
			got, err := decodeRaw(g.raw, g.version)
			if err != nil {
				t.Fatalf("decode: %v", err)
			}
			if !reflect.DeepEqual(got, g.pkt) {
				t.Fatalf("decode mismatch\n got %#v\nwant %#v", got, g.pkt)
			}
		})
	}
}

func TestGoldenEncode(t *testing.T) {
	for _, g := range goldenPackets {
		if g.decodeOnly {
			continue
		}
		t.Run(g.name, func(t *testing.T) {
			got, err := Append(nil, g.pkt, g.version)
			if err != nil {
				t.Fatalf("encode: %v", err)
			}
			if !bytes.Equal(got, g.raw) {
				t.Fatalf("encode mismatch\n got % X\nwant % X", got, g.raw)
			}
			n, err := Size(g.pkt, g.version)
			if err != nil || n != len(got) {
				t.Fatalf("Size = %d, %v; want %d", n, err, len(got))
			}
			// Appending after existing bytes keeps them and allocates nothing
			// when there is room.
			dst := make([]byte, 3, 3+len(got))
			allocs := testing.AllocsPerRun(10, func() {
				dst, _ = Append(dst[:3], g.pkt, g.version)
			})
			if allocs != 0 || !bytes.Equal(dst[3:], g.raw) {
				t.Fatalf("Append into preallocated dst: %v allocs, % X", allocs, dst[3:])
			}
		})
	}
}

// TestGoldenCoverage checks that the table exercises every packet type in
// every version it exists in, and every property identifier.
func TestGoldenCoverage(t *testing.T) {
	seenType := map[[2]byte]bool{}
	var seenProps uint64
	for _, g := range goldenPackets {
		seenType[[2]byte{byte(g.pkt.Type()), g.version}] = true
		for _, p := range propsOf(g.pkt) {
			seenProps |= propBits(p)
		}
	}
	for typ := CONNECT; typ <= AUTH; typ++ {
		for _, v := range []byte{V31, V311, V5} {
			if typ == AUTH && v != V5 {
				continue
			}
			if !seenType[[2]byte{byte(typ), v}] {
				t.Errorf("no golden packet of type %d for version %d", typ, v)
			}
		}
	}
	for id := range propAllowed {
		if propAllowed[id] != 0 && seenProps&(1<<id) == 0 {
			t.Errorf("property 0x%02X not covered by the golden table", id)
		}
	}
}

func propsOf(p Packet) []*Properties {
	switch p := p.(type) {
	case *Connect:
		if p.Will != nil {
			return []*Properties{&p.Properties, &p.Will.Properties}
		}
		return []*Properties{&p.Properties}
	case *Connack:
		return []*Properties{&p.Properties}
	case *Publish:
		return []*Properties{&p.Properties}
	case *Ack:
		return []*Properties{&p.Properties}
	case *Subscribe:
		return []*Properties{&p.Properties}
	case *Suback:
		return []*Properties{&p.Properties}
	case *Unsubscribe:
		return []*Properties{&p.Properties}
	case *Unsuback:
		return []*Properties{&p.Properties}
	case *Disconnect:
		return []*Properties{&p.Properties}
	case *Auth:
		return []*Properties{&p.Properties}
	}
	return nil
}

// propFieldIDs maps the fields of Properties, in declaration order, to their
// identifiers.
var propFieldIDs = []int{0x01, 0x02, 0x03, 0x08, 0x09, 0x0B, 0x11, 0x12, 0x13, 0x15, 0x16, 0x17, 0x18,
	0x19, 0x1A, 0x1C, 0x1F, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26, 0x27, 0x28, 0x29, 0x2A}

// propBits is the set of identifiers whose field is set in p.
func propBits(p *Properties) uint64 {
	v := reflect.ValueOf(p).Elem()
	if v.NumField() != len(propFieldIDs) {
		panic("propFieldIDs out of date")
	}
	var bits uint64
	for i := range v.NumField() {
		if !v.Field(i).IsZero() {
			bits |= 1 << propFieldIDs[i]
		}
	}
	return bits
}
