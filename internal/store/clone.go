package store

import (
	"slices"

	"github.com/starling-mqtt/starling/internal/packet"
)

// Clone returns a deep copy of m: no slice or pointer is shared with m.
// A nil m gives nil.
func (m *Message) Clone() *Message {
	if m == nil {
		return nil
	}
	c := *m
	c.Payload = slices.Clone(m.Payload)
	c.Props = cloneProps(m.Props)
	return &c
}

// Clone returns a deep copy of s, its will included.
func (s *Session) Clone() *Session {
	if s == nil {
		return nil
	}
	c := *s
	if s.Will != nil {
		w := *s.Will
		w.Message = *s.Will.Message.Clone()
		c.Will = &w
	}
	return &c
}

// Clone returns a deep copy of s.
func (s *Subscription) Clone() *Subscription {
	if s == nil {
		return nil
	}
	c := *s
	return &c
}

// Clone returns a deep copy of o.
func (o *Outbound) Clone() *Outbound {
	if o == nil {
		return nil
	}
	c := *o
	c.SubIDs = slices.Clone(o.SubIDs)
	return &c
}

// cloneProps deep-copies every field of p, not only the message properties.
func cloneProps(p packet.Properties) packet.Properties {
	c := p
	dupB := func(v *byte) *byte {
		if v == nil {
			return nil
		}
		x := *v
		return &x
	}
	dup16 := func(v *uint16) *uint16 {
		if v == nil {
			return nil
		}
		x := *v
		return &x
	}
	dup32 := func(v *uint32) *uint32 {
		if v == nil {
			return nil
		}
		x := *v
		return &x
	}
	c.PayloadFormat = dupB(p.PayloadFormat)
	c.MessageExpiry = dup32(p.MessageExpiry)
	c.CorrelationData = slices.Clone(p.CorrelationData)
	c.SubscriptionIDs = slices.Clone(p.SubscriptionIDs)
	c.SessionExpiry = dup32(p.SessionExpiry)
	c.ServerKeepAlive = dup16(p.ServerKeepAlive)
	c.AuthData = slices.Clone(p.AuthData)
	c.RequestProblemInfo = dupB(p.RequestProblemInfo)
	c.WillDelay = dup32(p.WillDelay)
	c.RequestResponseInfo = dupB(p.RequestResponseInfo)
	c.ReceiveMaximum = dup16(p.ReceiveMaximum)
	c.TopicAliasMaximum = dup16(p.TopicAliasMaximum)
	c.TopicAlias = dup16(p.TopicAlias)
	c.MaximumQoS = dupB(p.MaximumQoS)
	c.RetainAvailable = dupB(p.RetainAvailable)
	c.UserProperties = slices.Clone(p.UserProperties)
	c.MaximumPacketSize = dup32(p.MaximumPacketSize)
	c.WildcardSubAvailable = dupB(p.WildcardSubAvailable)
	c.SubIDAvailable = dupB(p.SubIDAvailable)
	c.SharedSubAvailable = dupB(p.SharedSubAvailable)
	return c
}
