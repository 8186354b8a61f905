package packet

// propCtx says where a property list sits; the will properties of CONNECT
// have their own set.
type propCtx uint16

const (
	ctxConnect propCtx = 1 << iota
	ctxConnack
	ctxPublish
	ctxAck // PUBACK, PUBREC, PUBREL, PUBCOMP
	ctxSubscribe
	ctxSuback
	ctxUnsubscribe
	ctxUnsuback
	ctxDisconnect
	ctxAuth
	ctxWill
)

// Property identifiers.
const (
	propPayloadFormat        = 0x01
	propMessageExpiry        = 0x02
	propContentType          = 0x03
	propResponseTopic        = 0x08
	propCorrelationData      = 0x09
	propSubscriptionID       = 0x0B
	propSessionExpiry        = 0x11
	propAssignedClientID     = 0x12
	propServerKeepAlive      = 0x13
	propAuthMethod           = 0x15
	propAuthData             = 0x16
	propRequestProblemInfo   = 0x17
	propWillDelay            = 0x18
	propRequestResponseInfo  = 0x19
	propResponseInfo         = 0x1A
	propServerReference      = 0x1C
	propReasonString         = 0x1F
	propReceiveMaximum       = 0x21
	propTopicAliasMaximum    = 0x22
	propTopicAlias           = 0x23
	propMaximumQoS           = 0x24
	propRetainAvailable      = 0x25
	propUserProperty         = 0x26
	propMaximumPacketSize    = 0x27
	propWildcardSubAvailable = 0x28
	propSubIDAvailable       = 0x29
	propSharedSubAvailable   = 0x2A
)

// propAllowed lists, per identifier, the packets that may carry it (MQTT 5
// section 2.2.2.2). An identifier not valid for the packet is malformed.
var propAllowed = [...]propCtx{
	propPayloadFormat:        ctxPublish | ctxWill,
	propMessageExpiry:        ctxPublish | ctxWill,
	propContentType:          ctxPublish | ctxWill,
	propResponseTopic:        ctxPublish | ctxWill,
	propCorrelationData:      ctxPublish | ctxWill,
	propSubscriptionID:       ctxPublish | ctxSubscribe,
	propSessionExpiry:        ctxConnect | ctxConnack | ctxDisconnect,
	propAssignedClientID:     ctxConnack,
	propServerKeepAlive:      ctxConnack,
	propAuthMethod:           ctxConnect | ctxConnack | ctxAuth,
	propAuthData:             ctxConnect | ctxConnack | ctxAuth,
	propRequestProblemInfo:   ctxConnect,
	propWillDelay:            ctxWill,
	propRequestResponseInfo:  ctxConnect,
	propResponseInfo:         ctxConnack,
	propServerReference:      ctxConnack | ctxDisconnect,
	propReasonString:         ctxConnack | ctxAck | ctxSuback | ctxUnsuback | ctxDisconnect | ctxAuth,
	propReceiveMaximum:       ctxConnect | ctxConnack,
	propTopicAliasMaximum:    ctxConnect | ctxConnack,
	propTopicAlias:           ctxPublish,
	propMaximumQoS:           ctxConnack,
	propRetainAvailable:      ctxConnack,
	propUserProperty:         ctxConnect | ctxConnack | ctxPublish | ctxAck | ctxSubscribe | ctxSuback | ctxUnsubscribe | ctxUnsuback | ctxDisconnect | ctxAuth | ctxWill,
	propMaximumPacketSize:    ctxConnect | ctxConnack,
	propWildcardSubAvailable: ctxConnack,
	propSubIDAvailable:       ctxConnack,
	propSharedSubAvailable:   ctxConnack,
}

func allowed(id int, ctx propCtx) bool {
	return id < len(propAllowed) && propAllowed[id]&ctx != 0
}

// decodeProps reads a property length and that many bytes of properties
// into p. It returns the set of identifiers seen (bit id).
func decodeProps(d *dec, p *Properties, ctx propCtx) (seen uint64, err error) {
	n, err := d.varint("property length")
	if err != nil {
		return 0, err
	}
	if n > d.len() {
		return 0, malformed("property length exceeds packet")
	}
	pd := &dec{b: d.b[:n:n]}
	d.b = d.b[n:]
	for pd.len() > 0 {
		// Identifiers are variable byte integers, but every defined one fits
		// in a single byte; a continuation bit can only mean an unknown id.
		id8, _ := pd.u8("property identifier")
		id := int(id8)
		if !allowed(id, ctx) {
			return 0, malformed("property identifier not valid for this packet")
		}
		// User Property may repeat; Subscription Identifier may repeat only in
		// PUBLISH (one per matching subscription). Anything else twice is a
		// protocol error.
		if seen&(1<<id) != 0 && id != propUserProperty && (id != propSubscriptionID || ctx != ctxPublish) {
			return 0, protocolErr("property included more than once")
		}
		seen |= 1 << id
		if err := decodeProp(pd, p, id); err != nil {
			return 0, err
		}
	}
	return seen, nil
}

func byteProp(d *dec, what string, dst **byte) error {
	v, err := d.u8(what)
	if err != nil {
		return err
	}
	if v > 1 {
		return protocolErr(what + ": value must be 0 or 1")
	}
	*dst = &v
	return nil
}

func u16Prop(d *dec, what string, dst **uint16, zeroOK bool) error {
	v, err := d.u16(what)
	if err != nil {
		return err
	}
	if v == 0 && !zeroOK {
		return protocolErr(what + ": value 0 is not allowed")
	}
	*dst = &v
	return nil
}

func u32Prop(d *dec, what string, dst **uint32, zeroOK bool) error {
	v, err := d.u32(what)
	if err != nil {
		return err
	}
	if v == 0 && !zeroOK {
		return protocolErr(what + ": value 0 is not allowed")
	}
	*dst = &v
	return nil
}

func decodeProp(d *dec, p *Properties, id int) error {
	var err error
	switch id {
	case propPayloadFormat:
		return byteProp(d, "payload format indicator", &p.PayloadFormat)
	case propMessageExpiry:
		return u32Prop(d, "message expiry interval", &p.MessageExpiry, true)
	case propContentType:
		p.ContentType, err = d.str("content type")
	case propResponseTopic:
		p.ResponseTopic, err = d.str("response topic")
	case propCorrelationData:
		p.CorrelationData, err = d.bin("correlation data")
	case propSubscriptionID:
		var v int
		if v, err = d.varint("subscription identifier"); err == nil {
			if v == 0 {
				return protocolErr("subscription identifier 0") // range is 1..268435455
			}
			p.SubscriptionIDs = append(p.SubscriptionIDs, v)
		}
	case propSessionExpiry:
		return u32Prop(d, "session expiry interval", &p.SessionExpiry, true)
	case propAssignedClientID:
		p.AssignedClientID, err = d.str("assigned client identifier")
	case propServerKeepAlive:
		return u16Prop(d, "server keep alive", &p.ServerKeepAlive, true)
	case propAuthMethod:
		p.AuthMethod, err = d.str("authentication method")
	case propAuthData:
		p.AuthData, err = d.bin("authentication data")
	case propRequestProblemInfo:
		return byteProp(d, "request problem information", &p.RequestProblemInfo)
	case propWillDelay:
		return u32Prop(d, "will delay interval", &p.WillDelay, true)
	case propRequestResponseInfo:
		return byteProp(d, "request response information", &p.RequestResponseInfo)
	case propResponseInfo:
		p.ResponseInfo, err = d.str("response information")
	case propServerReference:
		p.ServerReference, err = d.str("server reference")
	case propReasonString:
		p.ReasonString, err = d.str("reason string")
	case propReceiveMaximum:
		return u16Prop(d, "receive maximum", &p.ReceiveMaximum, false)
	case propTopicAliasMaximum:
		return u16Prop(d, "topic alias maximum", &p.TopicAliasMaximum, true)
	case propTopicAlias:
		// 0 is answered, like a value above the maximum (which the broker
		// checks), with 0x94 Topic Alias invalid [MQTT-3.3.2-8, 3.3.2-9].
		if err := u16Prop(d, "topic alias", &p.TopicAlias, true); err != nil {
			return err
		}
		if *p.TopicAlias == 0 {
			return &Error{Code: TopicAliasInvalid, Reason: "topic alias: value 0 is not allowed"}
		}
		return nil
	case propMaximumQoS:
		return byteProp(d, "maximum QoS", &p.MaximumQoS)
	case propRetainAvailable:
		return byteProp(d, "retain available", &p.RetainAvailable)
	case propUserProperty:
		var k, v string
		if k, err = d.str("user property key"); err == nil {
			if v, err = d.str("user property value"); err == nil {
				p.UserProperties = append(p.UserProperties, UserProperty{k, v})
			}
		}
	case propMaximumPacketSize:
		return u32Prop(d, "maximum packet size", &p.MaximumPacketSize, false)
	case propWildcardSubAvailable:
		return byteProp(d, "wildcard subscription available", &p.WildcardSubAvailable)
	case propSubIDAvailable:
		return byteProp(d, "subscription identifiers available", &p.SubIDAvailable)
	case propSharedSubAvailable:
		return byteProp(d, "shared subscription available", &p.SharedSubAvailable)
	default:
		return malformed("unknown property identifier")
	}
	return err
}

// propsSize validates p for ctx and returns the size of the property list
// without its length prefix. Properties not allowed in ctx are skipped.
func propsSize(p *Properties, ctx propCtx) (int, error) {
	n := 0
	has := func(id int) bool { return propAllowed[id]&ctx != 0 }
	str := func(id int, s string) error {
		if s == "" || !has(id) {
			return nil
		}
		m, err := strSize("property", len(s))
		n += 1 + m
		return err
	}
	if p.PayloadFormat != nil && has(propPayloadFormat) {
		n += 2
	}
	if p.MessageExpiry != nil && has(propMessageExpiry) {
		n += 5
	}
	if err := str(propContentType, p.ContentType); err != nil {
		return 0, err
	}
	if err := str(propResponseTopic, p.ResponseTopic); err != nil {
		return 0, err
	}
	if len(p.CorrelationData) > 0 && has(propCorrelationData) {
		m, err := strSize("correlation data", len(p.CorrelationData))
		if err != nil {
			return 0, err
		}
		n += 1 + m
	}
	if len(p.SubscriptionIDs) > 0 && has(propSubscriptionID) {
		if ctx != ctxPublish && len(p.SubscriptionIDs) > 1 {
			return 0, encErr("more than one subscription identifier")
		}
		for _, id := range p.SubscriptionIDs {
			if id < 1 || id > MaxRemaining {
				return 0, encErr("subscription identifier out of range")
			}
			n += 1 + varintLen(id)
		}
	}
	if p.SessionExpiry != nil && has(propSessionExpiry) {
		n += 5
	}
	if err := str(propAssignedClientID, p.AssignedClientID); err != nil {
		return 0, err
	}
	if p.ServerKeepAlive != nil && has(propServerKeepAlive) {
		n += 3
	}
	if has(propAuthMethod) && (p.AuthMethod != "" || len(p.AuthData) > 0) {
		// Authentication Data requires a method, so an empty method is
		// still written when data is present.
		m, err := strSize("authentication method", len(p.AuthMethod))
		if err != nil {
			return 0, err
		}
		n += 1 + m
	}
	if len(p.AuthData) > 0 && has(propAuthData) {
		m, err := strSize("authentication data", len(p.AuthData))
		if err != nil {
			return 0, err
		}
		n += 1 + m
	}
	if p.RequestProblemInfo != nil && has(propRequestProblemInfo) {
		n += 2
	}
	if p.WillDelay != nil && has(propWillDelay) {
		n += 5
	}
	if p.RequestResponseInfo != nil && has(propRequestResponseInfo) {
		n += 2
	}
	if err := str(propResponseInfo, p.ResponseInfo); err != nil {
		return 0, err
	}
	if err := str(propServerReference, p.ServerReference); err != nil {
		return 0, err
	}
	if err := str(propReasonString, p.ReasonString); err != nil {
		return 0, err
	}
	if p.ReceiveMaximum != nil && has(propReceiveMaximum) {
		n += 3
	}
	if p.TopicAliasMaximum != nil && has(propTopicAliasMaximum) {
		n += 3
	}
	if p.TopicAlias != nil && has(propTopicAlias) {
		n += 3
	}
	if p.MaximumQoS != nil && has(propMaximumQoS) {
		n += 2
	}
	if p.RetainAvailable != nil && has(propRetainAvailable) {
		n += 2
	}
	if has(propUserProperty) {
		for _, u := range p.UserProperties {
			k, err := strSize("user property", len(u.Key))
			if err != nil {
				return 0, err
			}
			v, err := strSize("user property", len(u.Value))
			if err != nil {
				return 0, err
			}
			n += 1 + k + v
		}
	}
	if p.MaximumPacketSize != nil && has(propMaximumPacketSize) {
		n += 5
	}
	if p.WildcardSubAvailable != nil && has(propWildcardSubAvailable) {
		n += 2
	}
	if p.SubIDAvailable != nil && has(propSubIDAvailable) {
		n += 2
	}
	if p.SharedSubAvailable != nil && has(propSharedSubAvailable) {
		n += 2
	}
	if n > MaxRemaining {
		return 0, &Error{Code: PacketTooLarge, Reason: "encode: properties too large"}
	}
	return n, nil
}

// propsFieldSize is the size of the property length plus the properties.
func propsFieldSize(p *Properties, ctx propCtx) (int, error) {
	n, err := propsSize(p, ctx)
	if err != nil {
		return 0, err
	}
	return varintLen(n) + n, nil
}

// appendProps writes the property length and the properties in identifier
// order. It assumes propsSize(p, ctx) succeeded.
func appendProps(dst []byte, p *Properties, ctx propCtx) []byte {
	n, _ := propsSize(p, ctx)
	dst = AppendVarint(dst, n)
	if n == 0 {
		return dst
	}
	has := func(id int) bool { return propAllowed[id]&ctx != 0 }
	if p.PayloadFormat != nil && has(propPayloadFormat) {
		dst = append(dst, propPayloadFormat, *p.PayloadFormat)
	}
	if p.MessageExpiry != nil && has(propMessageExpiry) {
		dst = appendU32(append(dst, propMessageExpiry), *p.MessageExpiry)
	}
	if p.ContentType != "" && has(propContentType) {
		dst = appendString(append(dst, propContentType), p.ContentType)
	}
	if p.ResponseTopic != "" && has(propResponseTopic) {
		dst = appendString(append(dst, propResponseTopic), p.ResponseTopic)
	}
	if len(p.CorrelationData) > 0 && has(propCorrelationData) {
		dst = appendBinary(append(dst, propCorrelationData), p.CorrelationData)
	}
	if has(propSubscriptionID) {
		for _, id := range p.SubscriptionIDs {
			dst = AppendVarint(append(dst, propSubscriptionID), id)
		}
	}
	if p.SessionExpiry != nil && has(propSessionExpiry) {
		dst = appendU32(append(dst, propSessionExpiry), *p.SessionExpiry)
	}
	if p.AssignedClientID != "" && has(propAssignedClientID) {
		dst = appendString(append(dst, propAssignedClientID), p.AssignedClientID)
	}
	if p.ServerKeepAlive != nil && has(propServerKeepAlive) {
		dst = appendU16(append(dst, propServerKeepAlive), *p.ServerKeepAlive)
	}
	if has(propAuthMethod) && (p.AuthMethod != "" || len(p.AuthData) > 0) {
		dst = appendString(append(dst, propAuthMethod), p.AuthMethod)
	}
	if len(p.AuthData) > 0 && has(propAuthData) {
		dst = appendBinary(append(dst, propAuthData), p.AuthData)
	}
	if p.RequestProblemInfo != nil && has(propRequestProblemInfo) {
		dst = append(dst, propRequestProblemInfo, *p.RequestProblemInfo)
	}
	if p.WillDelay != nil && has(propWillDelay) {
		dst = appendU32(append(dst, propWillDelay), *p.WillDelay)
	}
	if p.RequestResponseInfo != nil && has(propRequestResponseInfo) {
		dst = append(dst, propRequestResponseInfo, *p.RequestResponseInfo)
	}
	if p.ResponseInfo != "" && has(propResponseInfo) {
		dst = appendString(append(dst, propResponseInfo), p.ResponseInfo)
	}
	if p.ServerReference != "" && has(propServerReference) {
		dst = appendString(append(dst, propServerReference), p.ServerReference)
	}
	if p.ReasonString != "" && has(propReasonString) {
		dst = appendString(append(dst, propReasonString), p.ReasonString)
	}
	if p.ReceiveMaximum != nil && has(propReceiveMaximum) {
		dst = appendU16(append(dst, propReceiveMaximum), *p.ReceiveMaximum)
	}
	if p.TopicAliasMaximum != nil && has(propTopicAliasMaximum) {
		dst = appendU16(append(dst, propTopicAliasMaximum), *p.TopicAliasMaximum)
	}
	if p.TopicAlias != nil && has(propTopicAlias) {
		dst = appendU16(append(dst, propTopicAlias), *p.TopicAlias)
	}
	if p.MaximumQoS != nil && has(propMaximumQoS) {
		dst = append(dst, propMaximumQoS, *p.MaximumQoS)
	}
	if p.RetainAvailable != nil && has(propRetainAvailable) {
		dst = append(dst, propRetainAvailable, *p.RetainAvailable)
	}
	if has(propUserProperty) {
		for _, u := range p.UserProperties {
			dst = appendString(appendString(append(dst, propUserProperty), u.Key), u.Value)
		}
	}
	if p.MaximumPacketSize != nil && has(propMaximumPacketSize) {
		dst = appendU32(append(dst, propMaximumPacketSize), *p.MaximumPacketSize)
	}
	if p.WildcardSubAvailable != nil && has(propWildcardSubAvailable) {
		dst = append(dst, propWildcardSubAvailable, *p.WildcardSubAvailable)
	}
	if p.SubIDAvailable != nil && has(propSubIDAvailable) {
		dst = append(dst, propSubIDAvailable, *p.SubIDAvailable)
	}
	if p.SharedSubAvailable != nil && has(propSharedSubAvailable) {
		dst = append(dst, propSharedSubAvailable, *p.SharedSubAvailable)
	}
	return dst
}

// empty reports whether no property allowed in ctx is set, which lets acks,
// DISCONNECT and AUTH use their short forms.
func (p *Properties) empty(ctx propCtx) bool {
	n, err := propsSize(p, ctx)
	return err == nil && n == 0
}
