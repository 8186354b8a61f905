package conn

import (
	"math"
	"net"

	"github.com/starling-mqtt/starling/internal/packet"
)

// SendPong queues a PINGRESP that overtakes what the writer holds back
// behind a gate: a keep-alive's answer must not wait for a store commit,
// which in a cluster whose queue stream is electing a leader takes
// seconds, long enough for a client with a short keep-alive to give the
// connection up. PINGRESP is ordered with no other packet.
func (c *Conn) SendPong() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closing || c.closed {
		return false
	}
	if c.pongs < math.MaxUint8 {
		c.pongs++
	}
	if e := c.end; e != nil && e.pong != nil {
		select {
		case e.pong <- struct{}{}:
		default: // one wake-up is pending already
		}
	}
	c.kickLocked()
	return true
}

// takePongs returns the PINGRESPs due, encoded, appended to buf.
func (c *Conn) takePongs(buf []byte) []byte {
	c.mu.Lock()
	n := c.pongs
	c.pongs = 0
	c.mu.Unlock()
	return appendPongs(buf, n)
}

// appendPongs appends n encoded PINGRESPs to buf.
func appendPongs(buf []byte, n uint8) []byte {
	for range n {
		buf = append(buf, byte(packet.PINGRESP)<<4, 0)
	}
	return buf
}

// awaitGate waits for g, writing the PINGRESPs that come due meanwhile.
// Everything before the gated packet has been written.
func (c *Conn) awaitGate(g Gate, w *wbuf) error {
	c.mu.Lock()
	e := c.endLocked()
	stop := chanLocked(&e.stop)
	if e.pong == nil {
		e.pong = make(chan struct{}, 1)
	}
	pong := e.pong
	c.mu.Unlock()
	for {
		if b := c.takePongs(w.b[:0]); len(b) > 0 {
			if err := c.writeOut(w, b); err != nil {
				return err
			}
		}
		select {
		case <-g.Done():
			return nil
		case <-stop:
			return net.ErrClosed
		case <-pong:
		}
	}
}
