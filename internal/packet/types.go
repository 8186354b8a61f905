// Package packet is the MQTT wire format for protocol levels 3 (3.1), 4 (3.1.1)
// and 5 (5.0): fixed header, variable byte integers, properties, reason codes
// and every control packet. It works on []byte and io only; it knows nothing of
// sockets or of the broker.
package packet

// Type is the MQTT control packet type (the high nibble of the first byte).
type Type byte

const (
	CONNECT     Type = 1
	CONNACK     Type = 2
	PUBLISH     Type = 3
	PUBACK      Type = 4
	PUBREC      Type = 5
	PUBREL      Type = 6
	PUBCOMP     Type = 7
	SUBSCRIBE   Type = 8
	SUBACK      Type = 9
	UNSUBSCRIBE Type = 10
	UNSUBACK    Type = 11
	PINGREQ     Type = 12
	PINGRESP    Type = 13
	DISCONNECT  Type = 14
	AUTH        Type = 15
)

// Protocol levels as carried in CONNECT.
const (
	V31  byte = 3 // MQTT 3.1, protocol name "MQIsdp"
	V311 byte = 4 // MQTT 3.1.1, protocol name "MQTT"
	V5   byte = 5 // MQTT 5.0, protocol name "MQTT"
)

// MaxRemaining is the largest remaining length a variable byte integer can carry.
const MaxRemaining = 268435455

// Packet is any decoded control packet.
type Packet interface {
	Type() Type
}

// FixedHeader is the first byte and the remaining length of a packet.
type FixedHeader struct {
	Type      Type
	Flags     byte // low nibble of the first byte
	Remaining int  // length of variable header plus payload
}

// UserProperty is one MQTT 5 user property; order and duplicates are kept.
type UserProperty struct {
	Key, Value string
}

// Properties holds every MQTT 5 property. A nil pointer or empty value means
// absent. Which properties a packet may carry is checked by the decoder.
type Properties struct {
	PayloadFormat        *byte          // 0x01 PUBLISH, will
	MessageExpiry        *uint32        // 0x02 PUBLISH, will
	ContentType          string         // 0x03 PUBLISH, will
	ResponseTopic        string         // 0x08 PUBLISH, will
	CorrelationData      []byte         // 0x09 PUBLISH, will
	SubscriptionIDs      []int          // 0x0B PUBLISH (many), SUBSCRIBE (one)
	SessionExpiry        *uint32        // 0x11 CONNECT, CONNACK, DISCONNECT
	AssignedClientID     string         // 0x12 CONNACK
	ServerKeepAlive      *uint16        // 0x13 CONNACK
	AuthMethod           string         // 0x15 CONNECT, CONNACK, AUTH
	AuthData             []byte         // 0x16 CONNECT, CONNACK, AUTH
	RequestProblemInfo   *byte          // 0x17 CONNECT
	WillDelay            *uint32        // 0x18 will
	RequestResponseInfo  *byte          // 0x19 CONNECT
	ResponseInfo         string         // 0x1A CONNACK
	ServerReference      string         // 0x1C CONNACK, DISCONNECT
	ReasonString         string         // 0x1F CONNACK, acks, SUBACK, UNSUBACK, DISCONNECT, AUTH
	ReceiveMaximum       *uint16        // 0x21 CONNECT, CONNACK
	TopicAliasMaximum    *uint16        // 0x22 CONNECT, CONNACK
	TopicAlias           *uint16        // 0x23 PUBLISH
	MaximumQoS           *byte          // 0x24 CONNACK
	RetainAvailable      *byte          // 0x25 CONNACK
	UserProperties       []UserProperty // 0x26 all packets with properties
	MaximumPacketSize    *uint32        // 0x27 CONNECT, CONNACK
	WildcardSubAvailable *byte          // 0x28 CONNACK
	SubIDAvailable       *byte          // 0x29 CONNACK
	SharedSubAvailable   *byte          // 0x2A CONNACK
}

// Will is the will message carried in CONNECT.
type Will struct {
	Topic      string
	Payload    []byte
	QoS        byte
	Retain     bool
	Properties Properties // v5 will properties
}

// Connect is the CONNECT packet.
type Connect struct {
	ProtocolName    string // "MQTT" or "MQIsdp"
	ProtocolVersion byte   // V31, V311 or V5
	CleanStart      bool   // Clean Session in 3.x
	KeepAlive       uint16
	ClientID        string
	Username        string
	HasUsername     bool
	Password        []byte
	HasPassword     bool
	Will            *Will // nil when the will flag is 0
	Properties      Properties
}

// Connack is the CONNACK packet. For 3.x, ReasonCode carries the return code
// (0..5).
type Connack struct {
	SessionPresent bool
	ReasonCode     ReasonCode
	Properties     Properties
}

// Publish is the PUBLISH packet. Payload may alias the decoder's input.
type Publish struct {
	Dup        bool
	QoS        byte
	Retain     bool
	Topic      string
	PacketID   uint16 // only for QoS 1 and 2
	Properties Properties
	Payload    []byte
}

// Ack is PUBACK, PUBREC, PUBREL or PUBCOMP; Kind says which. In v5 a reason
// code of 0 with no properties is encoded in the short form.
type Ack struct {
	Kind       Type
	PacketID   uint16
	ReasonCode ReasonCode
	Properties Properties
}

// Subscription is one topic filter with its options in SUBSCRIBE.
type Subscription struct {
	Filter            string
	QoS               byte
	NoLocal           bool // v5
	RetainAsPublished bool // v5
	RetainHandling    byte // v5: 0, 1 or 2
}

// Subscribe is the SUBSCRIBE packet.
type Subscribe struct {
	PacketID      uint16
	Properties    Properties
	Subscriptions []Subscription
}

// Suback is the SUBACK packet; in 3.x the codes are 0,1,2 or 0x80.
type Suback struct {
	PacketID    uint16
	Properties  Properties
	ReasonCodes []ReasonCode
}

// Unsubscribe is the UNSUBSCRIBE packet.
type Unsubscribe struct {
	PacketID   uint16
	Properties Properties
	Filters    []string
}

// Unsuback is the UNSUBACK packet; 3.x carries no reason codes.
type Unsuback struct {
	PacketID    uint16
	Properties  Properties
	ReasonCodes []ReasonCode
}

// Pingreq is the PINGREQ packet.
type Pingreq struct{}

// Pingresp is the PINGRESP packet.
type Pingresp struct{}

// Disconnect is the DISCONNECT packet; 3.x carries no body.
type Disconnect struct {
	ReasonCode ReasonCode
	Properties Properties
}

// Auth is the v5 AUTH packet.
type Auth struct {
	ReasonCode ReasonCode
	Properties Properties
}

func (*Connect) Type() Type     { return CONNECT }
func (*Connack) Type() Type     { return CONNACK }
func (*Publish) Type() Type     { return PUBLISH }
func (a *Ack) Type() Type       { return a.Kind }
func (*Subscribe) Type() Type   { return SUBSCRIBE }
func (*Suback) Type() Type      { return SUBACK }
func (*Unsubscribe) Type() Type { return UNSUBSCRIBE }
func (*Unsuback) Type() Type    { return UNSUBACK }
func (*Pingreq) Type() Type     { return PINGREQ }
func (*Pingresp) Type() Type    { return PINGRESP }
func (*Disconnect) Type() Type  { return DISCONNECT }
func (*Auth) Type() Type        { return AUTH }
