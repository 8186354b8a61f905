package packet

// codeSet is the set of reason codes a v5 packet may carry.
type codeSet [4]uint64

func newCodeSet(codes ...ReasonCode) codeSet {
	var s codeSet
	for _, c := range codes {
		s[c>>6] |= 1 << (c & 63)
	}
	return s
}

func (s *codeSet) has(c ReasonCode) bool { return s[c>>6]&(1<<(c&63)) != 0 }

// Reason codes allowed per packet (MQTT 5 section 3, each packet's Reason
// Code table). Receiving another one is treated as a protocol error.
var (
	connackCodes = newCodeSet(Success, UnspecifiedError, MalformedPacket, ProtocolError,
		ImplementationSpecific, UnsupportedProtocolVersion, ClientIDNotValid, BadUsernameOrPassword,
		NotAuthorized, ServerUnavailable, ServerBusy, Banned, BadAuthenticationMethod,
		TopicNameInvalid, PacketTooLarge, QuotaExceeded, PayloadFormatInvalid, RetainNotSupported,
		QoSNotSupported, UseAnotherServer, ServerMoved, ConnectionRateExceeded)
	pubackCodes = newCodeSet(Success, NoMatchingSubscribers, UnspecifiedError, // PUBACK, PUBREC
		ImplementationSpecific, NotAuthorized, TopicNameInvalid, PacketIDInUse, QuotaExceeded,
		PayloadFormatInvalid)
	pubrelCodes   = newCodeSet(Success, PacketIDNotFound) // PUBREL, PUBCOMP
	subackV3Codes = newCodeSet(Success, GrantedQoS1, GrantedQoS2, UnspecifiedError)
	subackCodes   = newCodeSet(Success, GrantedQoS1, GrantedQoS2, UnspecifiedError,
		ImplementationSpecific, NotAuthorized, TopicFilterInvalid, PacketIDInUse, QuotaExceeded,
		SharedSubNotSupported, SubIDsNotSupported, WildcardSubNotSupported)
	unsubackCodes = newCodeSet(Success, NoSubscriptionExisted, UnspecifiedError,
		ImplementationSpecific, NotAuthorized, TopicFilterInvalid, PacketIDInUse)
	disconnectCodes = newCodeSet(Success, DisconnectWithWill, UnspecifiedError, MalformedPacket,
		ProtocolError, ImplementationSpecific, NotAuthorized, ServerBusy, ServerShuttingDown,
		KeepAliveTimeout, SessionTakenOver, TopicFilterInvalid, TopicNameInvalid,
		ReceiveMaximumExceeded, TopicAliasInvalid, PacketTooLarge, MessageRateTooHigh,
		QuotaExceeded, AdministrativeAction, PayloadFormatInvalid, RetainNotSupported,
		QoSNotSupported, UseAnotherServer, ServerMoved, SharedSubNotSupported,
		ConnectionRateExceeded, MaximumConnectTime, SubIDsNotSupported, WildcardSubNotSupported)
	authCodes = newCodeSet(Success, ContinueAuthentication, ReAuthenticate)
)

func (*Pingreq) flags() byte                           { return 0 }
func (*Pingreq) size(bool) (int, error)                { return 0, nil }
func (*Pingreq) appendBody(dst []byte, _ bool) []byte  { return dst }
func (*Pingresp) flags() byte                          { return 0 }
func (*Pingresp) size(bool) (int, error)               { return 0, nil }
func (*Pingresp) appendBody(dst []byte, _ bool) []byte { return dst }

// decodeReasonProps reads the optional reason code and properties of v5
// DISCONNECT and AUTH: remaining length 0 means reason 0 and no properties,
// 1 means a reason code only.
func decodeReasonProps(d *dec, set *codeSet, p *Properties, ctx propCtx) (ReasonCode, error) {
	if d.len() == 0 {
		return Success, nil
	}
	c, _ := d.u8("reason code")
	if !set.has(ReasonCode(c)) {
		return 0, protocolErr("invalid reason code")
	}
	if d.len() > 0 {
		if _, err := decodeProps(d, p, ctx); err != nil {
			return 0, err
		}
	}
	return ReasonCode(c), nil
}

func reasonPropsSize(code ReasonCode, p *Properties, ctx propCtx) (int, error) {
	n, err := propsSize(p, ctx)
	switch {
	case err != nil:
		return 0, err
	case n > 0:
		return 1 + varintLen(n) + n, nil
	case code != Success:
		return 1, nil
	}
	return 0, nil
}

func appendReasonProps(dst []byte, code ReasonCode, p *Properties, ctx propCtx) []byte {
	if !p.empty(ctx) {
		return appendProps(append(dst, byte(code)), p, ctx)
	}
	if code != Success {
		dst = append(dst, byte(code))
	}
	return dst
}

func decodeDisconnect(d *dec, v5 bool) (Packet, error) {
	p := &Disconnect{}
	if v5 {
		var err error
		if p.ReasonCode, err = decodeReasonProps(d, &disconnectCodes, &p.Properties, ctxDisconnect); err != nil {
			return nil, err
		}
	}
	return done(p, d, "DISCONNECT") // 3.x DISCONNECT has no body
}

func (*Disconnect) flags() byte { return 0 }

func (p *Disconnect) size(v5 bool) (int, error) {
	if !v5 {
		return 0, nil
	}
	return reasonPropsSize(p.ReasonCode, &p.Properties, ctxDisconnect)
}

func (p *Disconnect) appendBody(dst []byte, v5 bool) []byte {
	if !v5 {
		return dst
	}
	return appendReasonProps(dst, p.ReasonCode, &p.Properties, ctxDisconnect)
}

func decodeAuth(d *dec) (Packet, error) {
	p := &Auth{}
	var err error
	if p.ReasonCode, err = decodeReasonProps(d, &authCodes, &p.Properties, ctxAuth); err != nil {
		return nil, err
	}
	return done(p, d, "AUTH")
}

func (*Auth) flags() byte { return 0 }

func (p *Auth) size(bool) (int, error) {
	return reasonPropsSize(p.ReasonCode, &p.Properties, ctxAuth)
}

func (p *Auth) appendBody(dst []byte, _ bool) []byte {
	return appendReasonProps(dst, p.ReasonCode, &p.Properties, ctxAuth)
}
