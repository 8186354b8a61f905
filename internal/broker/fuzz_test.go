package broker

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/config"
	"github.com/starling-mqtt/starling/internal/packet"
)

// FuzzConnection feeds arbitrary bytes to a connection after a valid CONNECT
// of each protocol level: the broker must never panic and must end the
// connection or keep serving, never hang.
func FuzzConnection(f *testing.F) {
	seeds := []packet.Packet{
		&packet.Publish{Topic: "a/b", QoS: 1, PacketID: 1, Payload: []byte("x")},
		&packet.Publish{Topic: "a/b", QoS: 2, PacketID: 2, Retain: true, Payload: []byte("x")},
		&packet.Subscribe{PacketID: 3, Subscriptions: []packet.Subscription{{Filter: "a/#", QoS: 2}, {Filter: "$share/g/a/+", QoS: 1}}},
		&packet.Unsubscribe{PacketID: 4, Filters: []string{"a/#"}},
		&packet.Ack{Kind: packet.PUBREL, PacketID: 2},
		&packet.Pingreq{},
		&packet.Disconnect{},
	}
	for _, v := range []byte{packet.V311, packet.V5} {
		var b []byte
		for _, p := range seeds {
			b, _ = packet.Append(b, p, v)
		}
		f.Add(v, b)
		f.Add(v, []byte{0x30, 0x7f, 0x00})
	}
	f.Fuzz(func(t *testing.T, version byte, data []byte) {
		v := packet.V311
		if version%2 == 1 {
			v = packet.V5
		}
		lim := config.Default().Limits
		lim.ConnectTimeout = time.Second
		br := New(lim, nil)
		script, _ := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: v, CleanStart: true, ClientID: "fuzz"}, v)
		script = append(script, data...)
		var written atomic.Int64
		c := &scriptConn{r: &byteReader{script}, closed: make(chan struct{}), written: &written}
		done := make(chan struct{})
		go func() { br.HandleConn(c); close(done) }()
		// Whatever the bytes, once input ends the connection must be
		// closable and the handler must return.
		time.Sleep(time.Millisecond)
		br.Close(time.Second)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("handler did not return")
		}
	})
}
