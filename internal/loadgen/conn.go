package loadgen

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/transport"
)

// conn is one MQTT connection of the tool. Writes are serialized by wmu (a
// pacer and the reader's PUBACKs may both write); reads belong to one
// goroutine.
type conn struct {
	nc      net.Conn
	br      *bufio.Reader
	version byte
	keep    bool // a persistent session (Config.Persistent)
	recvMax int  // the broker's Receive Maximum (v5), 65535 otherwise
	wmu     sync.Mutex
	closed  atomic.Bool
	body    []byte // reader's buffer for packets larger than br
	acks    []byte // reader's pending PUBACKs, written when br runs dry
}

// dialer opens connections to one URL.
type dialer struct {
	u        *url.URL
	insecure bool
	deflate  bool // offer permessage-deflate on ws:// and wss://
	version  byte
	rbuf     int      // bufio.Reader size
	keep     bool     // connect with a persistent session
	src      *sources // source addresses (nil: the kernel's choice)
}

func (d *dialer) dial(ctx context.Context) (net.Conn, error) {
	var tcfg *tls.Config
	if d.u.Scheme == "ssl" || d.u.Scheme == "tls" || d.u.Scheme == "mqtts" || d.u.Scheme == "wss" {
		tcfg = &tls.Config{ServerName: d.u.Hostname(), InsecureSkipVerify: d.insecure} //nolint:gosec // -insecure is the user's choice
	}
	switch d.u.Scheme {
	case "ws", "wss":
		return transport.DialWSConfig(ctx, d.u.String(), transport.WSDialConfig{Subprotocol: "mqtt", TLSConfig: tcfg,
			Compression: d.deflate, NetDial: d.src.dial})
	case "ssl", "tls", "mqtts":
		td := tls.Dialer{NetDialer: d.src.dialer(), Config: tcfg}
		return td.DialContext(ctx, "tcp", d.u.Host)
	}
	return d.src.dialer().DialContext(ctx, "tcp", d.u.Host)
}

// open dials, sends CONNECT (plus SUBSCRIBE to filter if not empty, in the
// same write) and waits for CONNACK (and SUBACK).
func (d *dialer) open(ctx context.Context, clientID, filter string, qos byte) (*conn, error) {
	nc, err := d.dial(ctx)
	if err != nil {
		return nil, err
	}
	c := &conn{nc: nc, br: bufio.NewReaderSize(nc, d.rbuf), version: d.version, keep: d.keep, recvMax: 65535}
	if err := c.handshake(ctx, clientID, filter, qos); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: %w", clientID, err)
	}
	return c, nil
}

func (c *conn) handshake(ctx context.Context, clientID, filter string, qos byte) error {
	deadline := time.Now().Add(10 * time.Second)
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	c.nc.SetDeadline(deadline)
	defer c.nc.SetDeadline(time.Time{})
	cp := &packet.Connect{ProtocolVersion: c.version, CleanStart: !c.keep, ClientID: clientID}
	if c.keep && c.version == packet.V5 {
		e := persistentExpiry
		cp.Properties.SessionExpiry = &e
	}
	buf, err := packet.Append(nil, cp, c.version)
	if err != nil {
		return err
	}
	if filter != "" {
		buf, err = packet.Append(buf, &packet.Subscribe{PacketID: 1,
			Subscriptions: []packet.Subscription{{Filter: filter, QoS: qos}}}, c.version)
		if err != nil {
			return err
		}
	}
	if _, err := c.nc.Write(buf); err != nil {
		return fmt.Errorf("write CONNECT: %w", err)
	}
	p, err := c.readPacket()
	if err != nil {
		return fmt.Errorf("read CONNACK: %w", err)
	}
	ack, ok := p.(*packet.Connack)
	if !ok {
		return fmt.Errorf("got %T, want CONNACK", p)
	}
	if ack.ReasonCode != 0 {
		return fmt.Errorf("CONNACK refused: 0x%02x %s", byte(ack.ReasonCode), ack.Properties.ReasonString)
	}
	if rm := ack.Properties.ReceiveMaximum; rm != nil && *rm > 0 {
		c.recvMax = int(*rm)
	}
	if filter == "" {
		return nil
	}
	p, err = c.readPacket()
	if err != nil {
		return fmt.Errorf("read SUBACK: %w", err)
	}
	sa, ok := p.(*packet.Suback)
	if !ok || len(sa.ReasonCodes) != 1 {
		return fmt.Errorf("got %T, want SUBACK", p)
	}
	if rc := sa.ReasonCodes[0]; byte(rc) != qos {
		return fmt.Errorf("SUBACK granted 0x%02x, want QoS %d", byte(rc), qos)
	}
	return nil
}

// readPacket reads and decodes one packet with the codec (setup only).
func (c *conn) readPacket() (packet.Packet, error) {
	fh, err := packet.ReadFixedHeader(c.br)
	if err != nil {
		return nil, err
	}
	body := make([]byte, fh.Remaining)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return nil, err
	}
	return packet.Decode(fh, body, c.version)
}

func (c *conn) write(b []byte) error {
	c.wmu.Lock()
	_, err := c.nc.Write(b)
	c.wmu.Unlock()
	return err
}

// close sends DISCONNECT (best effort, bounded) and closes the socket.
func (c *conn) close(graceful bool) {
	if !c.closed.CompareAndSwap(false, true) {
		return
	}
	if graceful && c.wmu.TryLock() {
		c.nc.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		if b, err := packet.Append(nil, &packet.Disconnect{}, c.version); err == nil {
			c.nc.Write(b)
		}
		c.wmu.Unlock()
	}
	c.nc.Close()
}

// handler receives what a reader decodes.
type handler interface {
	// payload is called for each PUBLISH received, with its payload (valid
	// only during the call) and the time it was decoded.
	payload(p []byte, now int64)
	// acked is called for each PUBACK, with its v5 reason code.
	acked(code byte)
}

// readLoop decodes packets until the connection fails. PUBLISH and PUBACK
// are parsed in place without allocating (framing and flags are checked by
// packet.ReadFixedHeader); anything else goes through packet.Decode.
func (c *conn) readLoop(h handler, base time.Time) error {
	for {
		fh, err := packet.ReadFixedHeader(c.br)
		if err != nil {
			return err
		}
		var body []byte
		peeked := fh.Remaining <= c.br.Size()
		if peeked {
			if body, err = c.br.Peek(fh.Remaining); err != nil {
				return err
			}
		} else {
			if cap(c.body) < fh.Remaining {
				c.body = make([]byte, fh.Remaining)
			}
			body = c.body[:fh.Remaining]
			if _, err := io.ReadFull(c.br, body); err != nil {
				return err
			}
		}
		switch fh.Type {
		case packet.PUBLISH:
			payload, id, err := parsePublish(body, fh.Flags, c.version == packet.V5)
			if err != nil {
				return err
			}
			h.payload(payload, int64(time.Since(base)))
			if id != 0 {
				c.acks = append(c.acks, byte(packet.PUBACK)<<4, 2, byte(id>>8), byte(id))
			}
		case packet.PUBACK:
			if len(body) < 2 {
				return fmt.Errorf("short PUBACK")
			}
			var code byte
			if len(body) > 2 {
				code = body[2]
			}
			h.acked(code)
		case packet.PINGRESP:
		default:
			p, err := packet.Decode(fh, body, c.version)
			if err != nil {
				return err
			}
			if d, ok := p.(*packet.Disconnect); ok {
				return fmt.Errorf("DISCONNECT from broker: 0x%02x %s", byte(d.ReasonCode), d.Properties.ReasonString)
			}
			return fmt.Errorf("unexpected %T", p)
		}
		if peeked {
			c.br.Discard(fh.Remaining)
		}
		// PUBACKs go out when the reader has caught up, or every 32, so
		// that the broker's inflight window never waits on a busy reader.
		if len(c.acks) > 0 && (c.br.Buffered() == 0 || len(c.acks) >= 32*4) {
			if err := c.write(c.acks); err != nil {
				return err
			}
			c.acks = c.acks[:0]
		}
	}
}

// parsePublish returns the payload and packet ID (0 at QoS 0) of a PUBLISH
// body without copying or allocating.
func parsePublish(b []byte, flags byte, v5 bool) ([]byte, uint16, error) {
	if len(b) < 2 {
		return nil, 0, fmt.Errorf("short PUBLISH")
	}
	n := 2 + int(binary.BigEndian.Uint16(b))
	var id uint16
	if flags>>1&3 > 0 {
		if len(b) < n+2 {
			return nil, 0, fmt.Errorf("short PUBLISH")
		}
		id = binary.BigEndian.Uint16(b[n:])
		n += 2
	}
	if v5 {
		plen, used, ok := uvarint(b[min(n, len(b)):])
		if !ok {
			return nil, 0, fmt.Errorf("PUBLISH properties length")
		}
		n += used + plen
	}
	if n > len(b) {
		return nil, 0, fmt.Errorf("short PUBLISH")
	}
	return b[n:], id, nil
}

func uvarint(b []byte) (v, used int, ok bool) {
	mult := 1
	for i := 0; i < 4 && i < len(b); i++ {
		v += int(b[i]&0x7f) * mult
		if b[i]&0x80 == 0 {
			return v, i + 1, true
		}
		mult <<= 7
	}
	return 0, 0, false
}
