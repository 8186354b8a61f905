package auth

import (
	"context"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/packet"
)

// With every verification slot taken and max_pending_verifications
// CONNECTs waiting for one, the next is refused at once with 0x89, not
// after the connect timeout; once a slot frees, a waiter gets it.
func TestPendingVerificationsBounded(t *testing.T) {
	dir := t.TempDir()
	pf := writeFile(t, dir, "passwd", "alice:"+mustHash(t, "a")+"\n")
	a, _ := newAuth(t, Config{PasswordFile: pf, MaxConcurrentVerifications: 1, MaxPendingVerifications: 2})
	a.sem <- struct{}{} // the only slot, busy
	login := func(ctx context.Context) packet.ReasonCode {
		_, code, _ := a.Authenticate(ctx, &broker.ConnectInfo{ClientID: "c", Username: "alice", HasUsername: true,
			Password: []byte("a"), HasPassword: true})
		return code
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	waiters := make(chan packet.ReasonCode, 2)
	for range 2 {
		go func() { waiters <- login(ctx) }()
	}
	for a.waiting.Load() < 2 {
		time.Sleep(time.Millisecond)
	}
	// The queue is full: refused without waiting for ctx, which never ends.
	if code := login(ctx); code != packet.ServerBusy {
		t.Fatalf("third CONNECT: 0x%02X, want 0x89", code)
	}
	<-a.sem // the slot frees: the waiters verify, one after the other
	for range 2 {
		if code := <-waiters; code != packet.Success {
			t.Fatalf("waiter: 0x%02X, want success", code)
		}
	}
}
