package packet

// ReasonCode is an MQTT 5 reason code (or a 3.x CONNACK return code / SUBACK
// granted QoS, which share the byte).
type ReasonCode byte

const (
	Success                    ReasonCode = 0x00 // also Normal disconnection, Granted QoS 0
	GrantedQoS1                ReasonCode = 0x01
	GrantedQoS2                ReasonCode = 0x02
	DisconnectWithWill         ReasonCode = 0x04
	NoMatchingSubscribers      ReasonCode = 0x10
	NoSubscriptionExisted      ReasonCode = 0x11
	ContinueAuthentication     ReasonCode = 0x18
	ReAuthenticate             ReasonCode = 0x19
	UnspecifiedError           ReasonCode = 0x80
	MalformedPacket            ReasonCode = 0x81
	ProtocolError              ReasonCode = 0x82
	ImplementationSpecific     ReasonCode = 0x83
	UnsupportedProtocolVersion ReasonCode = 0x84
	ClientIDNotValid           ReasonCode = 0x85
	BadUsernameOrPassword      ReasonCode = 0x86
	NotAuthorized              ReasonCode = 0x87
	ServerUnavailable          ReasonCode = 0x88
	ServerBusy                 ReasonCode = 0x89
	Banned                     ReasonCode = 0x8A
	ServerShuttingDown         ReasonCode = 0x8B
	BadAuthenticationMethod    ReasonCode = 0x8C
	KeepAliveTimeout           ReasonCode = 0x8D
	SessionTakenOver           ReasonCode = 0x8E
	TopicFilterInvalid         ReasonCode = 0x8F
	TopicNameInvalid           ReasonCode = 0x90
	PacketIDInUse              ReasonCode = 0x91
	PacketIDNotFound           ReasonCode = 0x92
	ReceiveMaximumExceeded     ReasonCode = 0x93
	TopicAliasInvalid          ReasonCode = 0x94
	PacketTooLarge             ReasonCode = 0x95
	MessageRateTooHigh         ReasonCode = 0x96
	QuotaExceeded              ReasonCode = 0x97
	AdministrativeAction       ReasonCode = 0x98
	PayloadFormatInvalid       ReasonCode = 0x99
	RetainNotSupported         ReasonCode = 0x9A
	QoSNotSupported            ReasonCode = 0x9B
	UseAnotherServer           ReasonCode = 0x9C
	ServerMoved                ReasonCode = 0x9D
	SharedSubNotSupported      ReasonCode = 0x9E
	ConnectionRateExceeded     ReasonCode = 0x9F
	MaximumConnectTime         ReasonCode = 0xA0
	SubIDsNotSupported         ReasonCode = 0xA1
	WildcardSubNotSupported    ReasonCode = 0xA2
)

// MQTT 3.x CONNACK return codes.
const (
	V3Accepted              ReasonCode = 0x00
	V3UnacceptableVersion   ReasonCode = 0x01
	V3IdentifierRejected    ReasonCode = 0x02
	V3ServerUnavailable     ReasonCode = 0x03
	V3BadUsernameOrPassword ReasonCode = 0x04
	V3NotAuthorized         ReasonCode = 0x05
)

// Error is a decode or protocol failure with the reason code the peer should
// be told (0x81 malformed packet, 0x82 protocol error, ...).
type Error struct {
	Code   ReasonCode
	Reason string
}

func (e *Error) Error() string { return "mqtt: " + e.Reason }

func malformed(reason string) error   { return &Error{Code: MalformedPacket, Reason: reason} }
func protocolErr(reason string) error { return &Error{Code: ProtocolError, Reason: reason} }
