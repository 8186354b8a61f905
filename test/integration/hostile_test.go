package integration

import (
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

// Hostile input: each test attacks the broker one way, checks its exact
// answer, and checks that a well-behaved client (a witness) keeps
// exchanging messages meanwhile. The malformed-packet cases of
// TestV5MalformedInput, TestV3MalformedPacketsCloseAndPublishWill and
// TestV3FirstPacketNotConnect are not repeated here.

// A remaining length above the maximum packet size is refused from the
// fixed header alone (DISCONNECT 0x95, or a close for 3.x and before
// CONNECT), and a length below it that is announced but not sent costs
// memory for the bytes that arrive, not for the length announced.
// Not parallel: it measures the heap.
func TestHostileOversizeRemainingLength(t *testing.T) {
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Store = "memory" })
	w := startWitness(t, addr, "oversize")

	// 268,435,455 bytes announced (the largest remaining length), none sent.
	huge := []byte{0x30, 0xff, 0xff, 0xff, 0x7f}
	r5, _ := v5Raw(t, addr, "oversize-v5", true, 0)
	r5.WriteRaw(huge)
	r5.ExpectClosed(packet.PacketTooLarge)

	r3 := v3RawConnect(t, addr, packet.V311, "oversize-v3", true)
	r3.WriteRaw(huge)
	if d := r3.ExpectClosed(0); d != nil {
		t.Fatalf("3.1.1 got DISCONNECT %+v", d)
	}
	pre := v3Raw(t, addr)
	pre.WriteRaw([]byte{0x10, 0xff, 0xff, 0xff, 0x7f}) // a CONNECT that size
	v3ExpectClosedSilently(t, pre, "huge CONNECT")

	// Just under the default maximum packet size (1 MiB), announced on many
	// connections that then send 100 bytes and stall.
	const conns, announced = 48, 1<<20 - 16
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	var stalled []*v5Conn
	for i := range conns {
		r, _ := v5Raw(t, addr, fmt.Sprintf("stall-%d", i), true, 0)
		hdr := append([]byte{0x30}, varint(announced)...)
		r.WriteRaw(append(hdr, make([]byte, 100)...))
		stalled = append(stalled, r)
	}
	time.Sleep(500 * time.Millisecond) // the broker reads what was sent
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grew := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	// Each stalled read holds one 64 KiB step (3 MiB in all) plus the
	// connection; allocating what was announced would be 48 MiB.
	const ceiling = 12 << 20
	t.Logf("heap grew by %d KiB for %d connections announcing %d KiB each", grew>>10, conns, announced>>10)
	if grew > ceiling {
		t.Fatalf("heap grew by %d MiB for %d stalled packets of %d bytes announced: memory follows the announcement", grew>>20, conns, announced)
	}
	for _, r := range stalled {
		r.Close()
	}
	w.check(t)
}

// Slowloris: bytes trickled slower than the broker's deadlines. A CONNECT
// trickled one byte every 100 ms is cut at the connect timeout even though
// bytes keep coming; after CONNECT, a packet trickled past 1.5 times the
// keep alive is cut with DISCONNECT 0x8D.
func TestHostileSlowloris(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.ConnectTimeout = time.Second
	})
	w := startWitness(t, addr, "slowloris")

	connect, err := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5,
		CleanStart: true, ClientID: "slowloris-with-a-long-client-identifier", KeepAlive: 30}, packet.V5)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 10 {
		wg.Add(2)
		// Before CONNECT: ~50 bytes at 10/s would take 5 s.
		go func() {
			defer wg.Done()
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			start := time.Now()
			for _, b := range connect {
				if _, err := nc.Write([]byte{b}); err != nil {
					break // closed by the broker
				}
				time.Sleep(100 * time.Millisecond)
			}
			nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _ := nc.Read(make([]byte, 16))
			if took := time.Since(start); n > 0 || took > 4*time.Second { // the trickle alone lasts 5 s
				errs <- fmt.Errorf("trickled CONNECT %d: %d bytes back, closed after %v (want a silent close at about 1s)", i, n, took)
			}
		}()
		// After CONNECT with keep alive 1 s: a PUBLISH trickled at 5 bytes/s.
		go func() {
			defer wg.Done()
			nc, err := net.Dial("tcp", addr)
			if err != nil {
				errs <- err
				return
			}
			defer nc.Close()
			cp, _ := packet.Append(nil, &packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5,
				CleanStart: true, ClientID: fmt.Sprintf("slow-pub-%d", i), KeepAlive: 1}, packet.V5)
			nc.Write(cp)
			start := time.Now()
			wg.Add(1)
			go func() {
				defer wg.Done()
				body := hostilePkt(0x30, v3Str("slow/t"), make([]byte, 1000))
				for _, b := range body {
					if _, err := nc.Write([]byte{b}); err != nil {
						return
					}
					time.Sleep(200 * time.Millisecond)
				}
			}()
			r := &rawReader{nc: nc}
			if ack, ok := r.next().(*packet.Connack); !ok || ack.ReasonCode != 0 {
				errs <- fmt.Errorf("slow publisher %d: want CONNACK 0, got %+v", i, ack)
				return
			}
			d, ok := r.next().(*packet.Disconnect)
			if took := time.Since(start); !ok || d.ReasonCode != packet.KeepAliveTimeout || took > 8*time.Second { // the trickle lasts 200 s
				errs <- fmt.Errorf("slow publisher %d: got %+v after %v, want DISCONNECT 0x8D at about 1.5s", i, d, took)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	w.check(t)
}

// rawReader decodes v5 packets from a plain net.Conn (for goroutines, where
// testutil.Raw's t.Fatalf may not be called).
type rawReader struct{ nc net.Conn }

func (r *rawReader) next() packet.Packet {
	r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	br := &oneByteReader{nc: r.nc}
	fh, err := packet.ReadFixedHeader(br)
	if err != nil {
		return nil
	}
	body := make([]byte, fh.Remaining)
	for n := 0; n < len(body); {
		m, err := r.nc.Read(body[n:])
		if err != nil {
			return nil
		}
		n += m
	}
	p, _ := packet.Decode(fh, body, packet.V5)
	return p
}

type oneByteReader struct{ nc net.Conn }

func (o *oneByteReader) ReadByte() (byte, error) {
	var b [1]byte
	_, err := o.nc.Read(b[:])
	return b[0], err
}

func (o *oneByteReader) Read(p []byte) (int, error) { return o.nc.Read(p) }

// Half-open connections: hundreds of TCP connections that never send a
// byte are all closed at the connect timeout.
func TestHostileHalfOpen(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.ConnectTimeout = 500 * time.Millisecond
	})
	w := startWitness(t, addr, "halfopen")
	const n = 200
	var ncs []net.Conn
	for range n {
		nc, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		t.Cleanup(func() { nc.Close() })
		ncs = append(ncs, nc)
	}
	start := time.Now()
	for _, nc := range ncs {
		waitClosed(t, nc, 5*time.Second)
	}
	if took := time.Since(start); took > 8*time.Second {
		t.Fatalf("%d silent connections closed after %v, want about 500ms", n, took)
	}
	w.check(t)
}

// 100,000 subscriptions from one client: the first
// limits.max_subscriptions_per_client (10,000 by default) are granted, the
// rest get 0x97 quota exceeded; the granted ones work.
func TestHostileManySubscriptions(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Store = "memory" })
	w := startWitness(t, addr, "manysubs")
	r, _ := v5Raw(t, addr, "manysubs", true, 0)
	const perPacket, packets = 1000, 100
	granted, refused := 0, 0
	for p := range packets {
		subs := make([]packet.Subscription, perPacket)
		for i := range subs {
			subs[i] = packet.Subscription{Filter: fmt.Sprintf("many/%d", p*perPacket+i), QoS: 1}
		}
		sa := v5RawSub(t, r, uint16(p+1), 0, subs...)
		for i, c := range sa.ReasonCodes {
			switch {
			case c == packet.GrantedQoS1 && refused == 0:
				granted++
			case c == packet.QuotaExceeded:
				refused++
			default:
				t.Fatalf("filter %d: SUBACK code 0x%02x after %d granted, %d refused", p*perPacket+i, byte(c), granted, refused)
			}
		}
	}
	if granted != 10000 || refused != 90000 {
		t.Fatalf("granted %d, refused %d; want 10000 and 90000", granted, refused)
	}
	// Resubscribing to a held filter is not a new subscription.
	if sa := v5RawSub(t, r, 200, 0, packet.Subscription{Filter: "many/9999"}); sa.ReasonCodes[0] != packet.Success {
		t.Fatalf("resubscribe at the limit: 0x%02x, want 0", byte(sa.ReasonCodes[0]))
	}
	pub, _ := v5Raw(t, addr, "manysubs-pub", true, 0)
	pub.Send(&packet.Publish{Topic: "many/50000", Payload: []byte("refused")},
		&packet.Publish{Topic: "many/9999", Payload: []byte("granted")})
	v5ReadPub(t, r, "many/9999", "granted")
	v5Silent(t, r, v5Quiet)
	w.check(t)
}

// Topic aliases: thousands of remappings within Topic Alias Maximum all
// resolve right; the first alias above it gets DISCONNECT 0x94.
func TestHostileTopicAliases(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Store = "memory" })
	w := startWitness(t, addr, "aliases")
	sub, _ := v5Raw(t, addr, "alias-sub", true, 0)
	v5RawSub(t, sub, 1, 0, packet.Subscription{Filter: "alias/#"})
	pub, ack := v5Raw(t, addr, "alias-pub", true, 0)
	max := *ack.Properties.TopicAliasMaximum
	if max != 64 {
		t.Fatalf("Topic Alias Maximum %d, want the default 64", max)
	}
	const remaps, batch = 3000, 100
	for start := 0; start < remaps; start += batch {
		var ps []packet.Packet
		for i := start; i < start+batch; i++ {
			a := uint16(i%int(max)) + 1
			set := &packet.Publish{Topic: fmt.Sprintf("alias/%d", i), Payload: []byte("set")}
			set.Properties.TopicAlias = v5U16(a)
			use := &packet.Publish{Payload: []byte("use")}
			use.Properties.TopicAlias = v5U16(a)
			ps = append(ps, set, use)
		}
		pub.Send(ps...)
		for i := start; i < start+batch; i++ {
			v5ReadPub(t, sub, fmt.Sprintf("alias/%d", i), "set")
			v5ReadPub(t, sub, fmt.Sprintf("alias/%d", i), "use")
		}
	}
	over := &packet.Publish{Topic: "alias/over", Payload: []byte("x")}
	over.Properties.TopicAlias = v5U16(max + 1)
	pub.Send(over)
	pub.ExpectClosed(packet.TopicAliasInvalid)
	v5Silent(t, sub, v5Quiet)
	w.check(t)
}

// Deeply nested topics: above limits.max_topic_levels (128 by default) a
// topic gets PUBACK 0x90 and a filter SUBACK 0x8F (0x80 for 3.x); with the
// limits off, a filter of 20,000 levels and a topic of 30,000 still match
// without harm.
func TestHostileDeepTopics(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Store = "memory" })
	w := startWitness(t, addr, "deep")
	r, _ := v5Raw(t, addr, "deep", true, 0)
	at := strings.Repeat("d/", 127) + "x" // 128 levels: allowed
	over := strings.Repeat("d/", 128) + "x"
	deep := strings.Repeat("d/", 2000) + "x"
	sa := v5RawSub(t, r, 1, 0, packet.Subscription{Filter: at}, packet.Subscription{Filter: over},
		packet.Subscription{Filter: strings.Repeat("+/", 1000) + "#"})
	if want := []packet.ReasonCode{0, packet.TopicFilterInvalid, packet.TopicFilterInvalid}; fmt.Sprint(sa.ReasonCodes) != fmt.Sprint(want) {
		t.Fatalf("SUBACK %v, want %v", sa.ReasonCodes, want)
	}
	for i, topic := range []string{over, deep} {
		r.Send(&packet.Publish{QoS: 1, PacketID: uint16(i + 1), Topic: topic, Payload: []byte("deep")})
		if a := v5ReadAck(t, r, packet.PUBACK); a.ReasonCode != packet.TopicNameInvalid {
			t.Fatalf("%d-byte topic: PUBACK 0x%02x, want 0x90", len(topic), byte(a.ReasonCode))
		}
	}
	r.Send(&packet.Publish{Topic: at, Payload: []byte("at the limit")})
	v5ReadPub(t, r, at, "at the limit")

	r3 := v3RawConnect(t, addr, packet.V311, "deep-v3", true)
	r3.Send(&packet.Subscribe{PacketID: 1, Subscriptions: []packet.Subscription{{Filter: over}}})
	if sa, ok := r3.Read().(*packet.Suback); !ok || sa.ReasonCodes[0] != 0x80 {
		t.Fatalf("3.1.1 SUBACK %+v, want 0x80", sa)
	}

	_, open := testutil.StartBroker(t, func(c *starling.Config) {
		c.Store = "memory"
		c.Limits.MaxTopicLevels = 0
		c.Limits.MaxTopicLength = 0
	})
	r, _ = v5Raw(t, open, "deep-open", true, 0)
	v5RawSub(t, r, 1, 0, packet.Subscription{Filter: strings.Repeat("+/", 20000) + "#"})
	topic := strings.Repeat("x/", 29999) + "x"
	r.Send(&packet.Publish{Topic: topic, Payload: []byte("very deep")})
	v5ReadPub(t, r, topic, "very deep")
	w.check(t)
}

// Invalid UTF-8 (and U+0000) in an MQTT 5 topic, filter or string property
// is a malformed packet: DISCONNECT 0x81 [MQTT-1.5.4-1, 1.5.4-2]. In an
// MQTT 5 CONNECT (client ID, user name, will topic, properties) it is
// CONNACK 0x81, then a close [MQTT-4.13.1-1]; a 3.1.1 CONNECT is closed
// without CONNACK, having no code for it [MQTT-3.1.4-1].
func TestHostileInvalidUTF8(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Store = "memory" })
	w := startWitness(t, addr, "utf8")
	sub, _ := v5Raw(t, addr, "utf8-sub", true, 0)
	v5RawSub(t, sub, 1, 0, packet.Subscription{Filter: "u/#"})

	userProp := func(k, v string) []byte { return append(append([]byte{0x26}, v3Str(k)...), v3Str(v)...) }
	props := func(ps ...[]byte) []byte {
		var b []byte
		for _, p := range ps {
			b = append(b, p...)
		}
		return append(varint(len(b)), b...)
	}
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"topic with a bad byte", hostilePkt(0x30, v3Str("u/\xff"), props(), []byte("x"))},
		{"topic with an overlong encoding", hostilePkt(0x30, v3Str("u/\xc0\xaf"), props(), []byte("x"))},
		{"topic with a surrogate", hostilePkt(0x30, v3Str("u/\xed\xa0\x80"), props(), []byte("x"))},
		{"topic with U+0000", hostilePkt(0x30, v3Str("u/\x00"), props(), []byte("x"))},
		{"user property key", hostilePkt(0x30, v3Str("u/ok"), props(userProp("k\xfe", "v")), []byte("x"))},
		{"user property value", hostilePkt(0x30, v3Str("u/ok"), props(userProp("k", "\xc3")), []byte("x"))},
		{"content type", hostilePkt(0x30, v3Str("u/ok"), props(append([]byte{0x03}, v3Str("text/\xff")...)), []byte("x"))},
		{"response topic", hostilePkt(0x32, v3Str("u/ok"), []byte{0, 1}, props(append([]byte{0x08}, v3Str("r/\xff")...)), []byte("x"))},
		{"subscribe filter", hostilePkt(0x82, []byte{0, 1}, props(), v3Str("u/\xff"), []byte{0})},
		{"unsubscribe filter", hostilePkt(0xa2, []byte{0, 1}, props(), v3Str("u/\x80"))},
		{"disconnect reason string", hostilePkt(0xe0, []byte{0}, props(append([]byte{0x1f}, v3Str("bye\xff")...)))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _ := v5Raw(t, addr, "", true, 0)
			r.WriteRaw(tc.raw)
			r.ExpectClosed(packet.MalformedPacket)
		})
	}
	connect := func(cprops []byte, flags byte, payload ...[]byte) []byte {
		return hostilePkt(0x10, append([][]byte{v3Str("MQTT"), {5, flags, 0, 30}, cprops}, payload...)...)
	}
	for _, tc := range []struct {
		name string
		raw  []byte
	}{
		{"client ID", connect(props(), 0x02, v3Str("id-\xff"))},
		{"user name", connect(props(), 0x82, v3Str("id"), v3Str("user\xc3"))},
		{"will topic", connect(props(), 0x06, v3Str("id"), props(), v3Str("w/\xff"), v3Str("p"))},
		{"will user property", connect(props(), 0x06, v3Str("id"), props(userProp("k", "\xff")), v3Str("w/t"), v3Str("p"))},
		{"user property", connect(props(userProp("\xed\xbf\xbf", "v")), 0x02, v3Str("id"))},
	} {
		t.Run("CONNECT "+tc.name, func(t *testing.T) {
			r := v5Dial(t, addr)
			r.WriteRaw(tc.raw)
			if ack := v5Read[*packet.Connack](t, r); ack.ReasonCode != packet.MalformedPacket {
				t.Fatalf("CONNACK 0x%02x, want 0x81", byte(ack.ReasonCode))
			}
			v3ExpectClosedSilently(t, r, tc.name+" after CONNACK")
		})
	}
	t.Run("CONNECT 3.1.1 client ID", func(t *testing.T) {
		r := v3Raw(t, addr)
		r.WriteRaw(hostilePkt(0x10, v3Str("MQTT"), []byte{4, 2, 0, 30}, v3Str("id-\xff")))
		v3ExpectClosedSilently(t, r, "3.1.1 client ID")
	})
	v5Silent(t, sub, v5Quiet) // nothing any of them carried was forwarded
	w.check(t)
}

// Every packet type other than CONNECT as the first packet closes the
// connection without an answer [MQTT-3.1.0-1]; a second CONNECT is a
// protocol error (DISCONNECT 0x82 for MQTT 5, a close for 3.x)
// [MQTT-3.1.0-2]. The broker does not panic on any of them.
func TestHostileBeforeAndSecondConnect(t *testing.T) {
	t.Parallel()
	_, addr := testutil.StartBroker(t, func(c *starling.Config) { c.Store = "memory" })
	w := startWitness(t, addr, "preconnect")
	id := []byte{0, 1}
	first := []struct {
		name string
		raw  []byte
	}{
		{"reserved 0", []byte{0x00, 0}},
		{"CONNACK", hostilePkt(0x20, []byte{0, 0})},
		{"PUBLISH QoS 0", hostilePkt(0x30, v3Str("pre/t"), []byte("x"))},
		{"PUBLISH QoS 1", hostilePkt(0x32, v3Str("pre/t"), id, []byte("x"))},
		{"PUBLISH QoS 2", hostilePkt(0x34, v3Str("pre/t"), id, []byte("x"))},
		{"PUBACK", hostilePkt(0x40, id)},
		{"PUBREC", hostilePkt(0x50, id)},
		{"PUBREL", hostilePkt(0x62, id)},
		{"PUBCOMP", hostilePkt(0x70, id)},
		{"SUBSCRIBE", hostilePkt(0x82, id, v3Str("pre/#"), []byte{1})},
		{"SUBACK", hostilePkt(0x90, id, []byte{0})},
		{"UNSUBSCRIBE", hostilePkt(0xa2, id, v3Str("pre/#"))},
		{"UNSUBACK", hostilePkt(0xb0, id)},
		{"PINGREQ", []byte{0xc0, 0}},
		{"PINGRESP", []byte{0xd0, 0}},
		{"DISCONNECT", []byte{0xe0, 0}},
		{"AUTH", hostilePkt(0xf0, []byte{0x18, 0})},
		{"AUTH with a method", hostilePkt(0xf0, []byte{0x18}, []byte{16, 0x15}, v3Str("SCRAM-SHA-256"), []byte{0x16, 0, 0})},
	}
	for _, tc := range first {
		t.Run("first "+tc.name, func(t *testing.T) {
			r := v5Dial(t, addr)
			r.WriteRaw(tc.raw)
			v3ExpectClosedSilently(t, r, tc.name)
		})
	}
	t.Run("second CONNECT v5 with a will", func(t *testing.T) {
		r, _ := v5Raw(t, addr, "twice-5", true, 0)
		r.Send(&packet.Connect{ProtocolName: "MQTT", ProtocolVersion: packet.V5, ClientID: "twice-5", CleanStart: true,
			Will: &packet.Will{Topic: "pre/will", Payload: []byte("w")}})
		r.ExpectClosed(packet.ProtocolError)
	})
	t.Run("second CONNECT 3.1", func(t *testing.T) {
		r := v3RawConnect(t, addr, packet.V31, "twice-31", true)
		r.Send(&packet.Connect{ProtocolName: "MQIsdp", ProtocolVersion: packet.V31, ClientID: "twice-31", CleanStart: true})
		if d := r.ExpectClosed(0); d != nil {
			t.Fatalf("3.1 got DISCONNECT %+v", d)
		}
	})
	w.check(t)
}
