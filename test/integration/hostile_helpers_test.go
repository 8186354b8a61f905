package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// witness is a well-behaved paho.golang publisher and subscriber pair that
// keeps sending QoS 1 messages to itself, one after the other, while a test
// attacks the broker: the attack must not stop it, slow it past its
// timeouts or lose a message.
type witness struct {
	topic string
	stop  chan struct{}
	done  chan struct{}

	mu    sync.Mutex
	count int   // messages published and received back, in order
	err   error // first failure
}

func startWitness(t *testing.T, addr, name string) *witness {
	t.Helper()
	w := &witness{topic: "witness/" + name, stop: make(chan struct{}), done: make(chan struct{})}
	sub, _ := dialV5(t, addr, name+"-wsub", nil)
	sub.sub(t, paho.SubscribeOptions{Topic: w.topic, QoS: 1})
	pub, _ := dialV5(t, addr, name+"-wpub", nil)
	go w.run(pub, sub)
	// Registered after the clients' cleanups, so it runs before them.
	t.Cleanup(w.halt)
	return w
}

func (w *witness) run(pub, sub *v5Client) {
	defer close(w.done)
	for i := 0; ; i++ {
		select {
		case <-w.stop:
			return
		default:
		}
		err := func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			payload := strconv.Itoa(i)
			if _, err := pub.Publish(ctx, &paho.Publish{Topic: w.topic, QoS: 1, Payload: []byte(payload)}); err != nil {
				return fmt.Errorf("publish %d: %w", i, err)
			}
			select {
			case m := <-sub.recv:
				if string(m.Payload) != payload {
					return fmt.Errorf("received %q, want %q", m.Payload, payload)
				}
			case <-time.After(5 * time.Second):
				return fmt.Errorf("message %d not received within 5s", i)
			}
			return nil
		}()
		w.mu.Lock()
		if err != nil {
			w.err = err
		} else {
			w.count++
		}
		w.mu.Unlock()
		if err != nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (w *witness) state() (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.count, w.err
}

// check asserts that the witness is still exchanging messages now (two
// more round trips within 10 s) and has never failed.
func (w *witness) check(t *testing.T) {
	t.Helper()
	start, err := w.state()
	deadline := time.Now().Add(10 * time.Second)
	for err == nil && time.Now().Before(deadline) {
		var n int
		if n, err = w.state(); n >= start+2 {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("well-behaved client failed during the attack: %v", err)
	}
	t.Fatalf("well-behaved client made no progress for 10s (stuck at %d messages)", start)
}

func (w *witness) halt() {
	select {
	case <-w.stop:
	default:
		close(w.stop)
	}
	<-w.done
}

// hostilePkt builds a packet from its first byte and body parts, with a
// variable byte integer remaining length of any size.
func hostilePkt(first byte, body ...[]byte) []byte {
	var b []byte
	for _, p := range body {
		b = append(b, p...)
	}
	return append(append([]byte{first}, varint(len(b))...), b...)
}

func varint(n int) []byte {
	var out []byte
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		out = append(out, c)
		if n == 0 {
			return out
		}
	}
}

// waitClosed reads from nc until the broker closes it, failing the test if
// any byte arrives (a silent close is expected) or it stays open past d.
func waitClosed(t *testing.T, nc net.Conn, d time.Duration) {
	t.Helper()
	nc.SetReadDeadline(time.Now().Add(d))
	var b [64]byte
	n, err := nc.Read(b[:])
	var ne net.Error
	switch {
	case n > 0:
		t.Fatalf("got % x before close, want a silent close", b[:n])
	case errors.As(err, &ne) && ne.Timeout():
		t.Fatalf("connection still open after %v", d)
	case err != io.EOF && !errors.Is(err, net.ErrClosed) && !isReset(err):
		t.Fatalf("read: %v", err)
	}
}

// isReset reports a connection reset by the peer (a close with unread data).
func isReset(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "read"
}
