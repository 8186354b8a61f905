package crash

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"sync"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// mqttConn is a minimal MQTT 5 client over the project's codec that returns
// errors instead of failing the test: the broker under it gets killed.
type mqttConn struct {
	nc  net.Conn
	br  *bufio.Reader
	wmu sync.Mutex
}

func dialMQTT(addr, clientID string) (*mqttConn, *packet.Connack, error) {
	nc, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, nil, err
	}
	c := &mqttConn{nc: nc, br: bufio.NewReader(nc)}
	expiry := uint32(3600)
	if err := c.send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: clientID, KeepAlive: 60,
		Properties: packet.Properties{SessionExpiry: &expiry}}); err != nil {
		nc.Close()
		return nil, nil, err
	}
	p, err := c.next(5 * time.Second)
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	ack, ok := p.(*packet.Connack)
	if !ok || ack.ReasonCode != packet.Success {
		nc.Close()
		return nil, nil, fmt.Errorf("connect %s: got %+v", clientID, p)
	}
	return c, ack, nil
}

func newReader(nc net.Conn) *bufio.Reader { return bufio.NewReader(nc) }

func (c *mqttConn) send(ps ...packet.Packet) error { return c.sendV(packet.V5, ps...) }

// sendV sends packets encoded for protocol level v.
func (c *mqttConn) sendV(v byte, ps ...packet.Packet) error {
	var buf []byte
	for _, p := range ps {
		var err error
		if buf, err = packet.Append(buf, p, v); err != nil {
			return err
		}
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.nc.SetWriteDeadline(time.Now().Add(5 * time.Second))
	_, err := c.nc.Write(buf)
	return err
}

func (c *mqttConn) next(timeout time.Duration) (packet.Packet, error) {
	return c.nextV(packet.V5, timeout)
}

// nextV reads the next packet, decoded for protocol level v.
func (c *mqttConn) nextV(v byte, timeout time.Duration) (packet.Packet, error) {
	if timeout > 0 {
		c.nc.SetReadDeadline(time.Now().Add(timeout))
	} else {
		c.nc.SetReadDeadline(time.Time{})
	}
	fh, err := packet.ReadFixedHeader(c.br)
	if err != nil {
		return nil, err
	}
	body := make([]byte, fh.Remaining)
	if _, err := io.ReadFull(c.br, body); err != nil {
		return nil, err
	}
	return packet.Decode(fh, body, v)
}

func (c *mqttConn) close() { c.nc.Close() }
