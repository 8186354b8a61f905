package conn

import (
	"net"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

// A packet started and not finished fails with ErrPacketTimeout after
// PacketTimeout even with no deadline (keep alive 0); whole packets, split
// or not, are read as usual, and a wait before a packet's first byte is
// not bounded by it.
func TestPacketTimeout(t *testing.T) {
	srv, cli := net.Pipe()
	defer cli.Close()
	c := New(srv, 1<<20)
	defer c.Close()
	c.SetVersion(packet.V311)
	c.SetShared(&Shared{PacketTimeout: 50 * time.Millisecond})
	ping := []byte{0xc0, 0x00}
	go func() {
		cli.Write(append(append([]byte{}, ping...), ping...)) // two whole packets at once
		time.Sleep(100 * time.Millisecond)                    // idle between packets: not bounded
		cli.Write(ping[:1])                                   // a packet started in two writes
		cli.Write(ping[1:])
		cli.Write([]byte{0x30, 0x80, 0x40, 0, 1, 't'}) // 8 KiB announced, 3 bytes sent
	}()
	for i := range 3 {
		if p, _, err := c.ReadPacket(time.Time{}); err != nil {
			t.Fatalf("packet %d: %v", i, err)
		} else if _, ok := p.(*packet.Pingreq); !ok {
			t.Fatalf("packet %d: %T", i, p)
		}
	}
	start := time.Now()
	if _, _, err := c.ReadPacket(time.Time{}); err != ErrPacketTimeout {
		t.Fatalf("stalled packet: %v, want ErrPacketTimeout", err)
	}
	if took := time.Since(start); took < c.sh.PacketTimeout {
		t.Fatalf("cut after %v, before PacketTimeout", took)
	}
}
