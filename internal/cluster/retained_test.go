package cluster

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/brokertest"
)

// localRetained reads a node's retained payload for topic ("" for none).
func localRetained(tn *testNode, topic string) string {
	ms, _ := tn.b.RetainedMatching(topic, 1)
	if len(ms) == 0 {
		return ""
	}
	return string(ms[0].Payload)
}

// bucketRetained reads the bucket's entry for topic ("" for none).
func bucketRetained(t *testing.T, tn *testNode, topic string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	e, err := tn.n.retained.Get(ctx, key(topic))
	if err != nil {
		return ""
	}
	_, m, err := decodeMessage(e.Value())
	if err != nil {
		t.Fatalf("bucket entry for %s: %v", topic, err)
	}
	return string(m.Payload)
}

// A node's own writes, echoed back by the bucket's watch, never replace a
// newer local value: a burst of updates to one topic is seen locally in
// order, never going back.
func TestRetainedEchoNeverGoesBack(t *testing.T) {
	t.Parallel()
	tn := startNodes(t, 1)[0]
	const n = 600
	var done atomic.Bool
	back := make(chan string, 1)
	go func() {
		last := -1
		for !done.Load() {
			if v := localRetained(tn, "e/t"); v != "" {
				i, _ := strconv.Atoi(v)
				if i < last {
					select {
					case back <- fmt.Sprintf("%d after %d", i, last):
					default:
					}
				}
				last = max(last, i)
			}
		}
	}()
	for i := range n {
		if _, err := tn.b.Publish("e/t", []byte(strconv.Itoa(i)), 1, true); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			time.Sleep(2 * time.Millisecond) // let some echoes in between
		}
	}
	last := strconv.Itoa(n - 1)
	brokertest.WaitFor(t, func() error {
		if got := bucketRetained(t, tn, "e/t"); got != last {
			return fmt.Errorf("bucket has %q, want %q", got, last)
		}
		return nil
	})
	time.Sleep(200 * time.Millisecond) // the last echoes
	done.Store(true)
	select {
	case s := <-back:
		t.Fatalf("local retained value went back: %s", s)
	default:
	}
	if got := localRetained(tn, "e/t"); got != last {
		t.Fatalf("local retained value %q, want %q", got, last)
	}
}

// A failed retained write is retried until it reaches the bucket; one
// that keeps failing is given up after a bounded number of tries and
// counted.
func TestRetainedWriteRetried(t *testing.T) {
	oldTries, oldBackoff := retainTries, retainBackoff
	retainTries, retainBackoff = 4, 10*time.Millisecond
	t.Cleanup(func() { retainTries, retainBackoff = oldTries, oldBackoff })
	tn := startNodes(t, 1)[0]

	var failures atomic.Int32
	fault := func(topic string) error {
		if topic == "never" {
			return errors.New("injected: bucket unavailable")
		}
		if topic == "flaky" && failures.Add(1) <= 3 {
			return errors.New("injected: bucket unavailable")
		}
		return nil
	}
	retainFault.Store(&fault)
	t.Cleanup(func() { retainFault.Store(nil) })

	for _, topic := range []string{"never", "flaky", "fine"} {
		if _, err := tn.b.Publish(topic, []byte("v-"+topic), 1, true); err != nil {
			t.Fatal(err)
		}
	}
	brokertest.WaitFor(t, func() error {
		flaky, fine, failed := bucketRetained(t, tn, "flaky"), bucketRetained(t, tn, "fine"), tn.n.retainFailed.Load()
		if flaky != "v-flaky" || fine != "v-fine" || failed != 1 {
			return fmt.Errorf("bucket: flaky=%q fine=%q; given up: %d (want 1)", flaky, fine, failed)
		}
		return nil
	})
	if got := bucketRetained(t, tn, "never"); got != "" {
		t.Fatalf("never: bucket has %q", got)
	}
	// The node keeps its own value, and a later change goes through.
	if got := localRetained(tn, "never"); got != "v-never" {
		t.Fatalf("never: local %q", got)
	}
}
