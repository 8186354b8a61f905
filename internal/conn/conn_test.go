package conn

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/packet"
)

func TestReadBodyLargeInSteps(t *testing.T) {
	want := make([]byte, 300<<10+7)
	for i := range want {
		want[i] = byte(i * 7)
	}
	got, err := readBody(io.MultiReader(bytes.NewReader(want[:1000]), bytes.NewReader(want[1000:])), len(want))
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("readBody: err %v, equal %v", err, bytes.Equal(got, want))
	}
	if _, err := readBody(bytes.NewReader(want[:100<<10]), len(want)); err == nil {
		t.Fatal("short body accepted")
	}
}

func TestTooLargeRejectedBeforeBody(t *testing.T) {
	srv, cli := net.Pipe()
	defer cli.Close()
	c := New(srv, 100)
	defer c.Close()
	go cli.Write([]byte{0x30, 0xff, 0xff, 0x3f}) // announces ~1 MiB, sends nothing more
	_, _, err := c.ReadPacket(time.Now().Add(5 * time.Second))
	if err != ErrTooLarge {
		t.Fatalf("err %v, want ErrTooLarge", err)
	}
}

// A client that sends but never reads is not read from once MaxPending
// replies wait for it; reading them lets it go on.
func TestReaderBackpressure(t *testing.T) {
	srv, cli := net.Pipe()
	defer cli.Close()
	c := New(srv, 1<<20)
	defer c.Close()
	c.SetVersion(packet.V311)
	// The writer blocks on the pipe with the first batch; fill the queue.
	c.Send(&packet.Pingresp{})
	time.Sleep(20 * time.Millisecond)
	for i := 0; i < MaxPending; i++ {
		c.Send(&packet.Pingresp{})
	}
	ping, _ := packet.Append(nil, &packet.Pingreq{}, packet.V311)
	go cli.Write(ping)
	got := make(chan error, 1)
	go func() {
		_, _, err := c.ReadPacket(time.Time{})
		got <- err
	}()
	select {
	case <-got:
		t.Fatal("read a packet while the client had MaxPending replies unread")
	case <-time.After(100 * time.Millisecond):
	}
	go io.Copy(io.Discard, cli)
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("read after drain: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("reader still blocked after the client read its replies")
	}
}
