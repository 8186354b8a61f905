package metrics

import (
	"math"
	"strconv"
	"sync"
	"testing"
	"time"
)

type recorder struct {
	mu  sync.Mutex
	got map[string]string
	n   int
}

func (r *recorder) Publish(topic string, payload []byte, qos byte, retain bool) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !retain || qos != 0 {
		panic("$SYS messages are retained QoS 0")
	}
	if r.got == nil {
		r.got = make(map[string]string)
	}
	r.got[topic] = string(payload)
	r.n++
	return 0, nil
}

func TestSysLoadAndChangesOnly(t *testing.T) {
	start := time.Unix(1000, 0)
	src := &fakeSource{Connected: 2, ConnectionsTotal: 5, Sessions: 3, MessagesIn: 100, MessagesOut: 50, Subscriptions: 4, Retained: 1}
	var src2 fakeSource
	pub := &recorder{}
	s := NewSys(sourceFunc(func() Counters {
		if src2.MessagesIn != 0 {
			return Counters(src2)
		}
		return Counters(*src)
	}), pub, SysOptions{Version: "v1.2.3", Start: start})
	if err := s.Update(start.Add(3 * time.Second)); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"$SYS/broker/version":                 "starling v1.2.3",
		"$SYS/broker/uptime":                  "3 seconds",
		"$SYS/broker/clients/connected":       "2",
		"$SYS/broker/clients/disconnected":    "1",
		"$SYS/broker/clients/total":           "3",
		"$SYS/broker/messages/received":       "100",
		"$SYS/broker/messages/sent":           "50",
		"$SYS/broker/subscriptions/count":     "4",
		"$SYS/broker/retained messages/count": "1",
	}
	for k, v := range want {
		if pub.got[k] != v {
			t.Errorf("%s = %q, want %q", k, pub.got[k], v)
		}
	}
	if _, ok := pub.got["$SYS/broker/bytes/received"]; ok {
		t.Error("bytes/received published by a broker that does not count bytes")
	}
	if _, ok := pub.got["$SYS/broker/load/messages/received/1min"]; ok {
		t.Error("a load published before there are two readings")
	}

	// 10 s later: 600 more messages in = 3600 per minute over that interval.
	src2 = fakeSource(*src)
	src2.MessagesIn += 600
	n := pub.n
	if err := s.Update(start.Add(13 * time.Second)); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		name string
		secs float64
	}{{"1min", 60}, {"5min", 300}, {"15min", 900}} {
		got, err := strconv.ParseFloat(pub.got["$SYS/broker/load/messages/received/"+w.name], 64)
		if err != nil {
			t.Fatal(err)
		}
		if want := 3600 * (1 - math.Exp(-10/w.secs)); math.Abs(got-want) > 0.01 {
			t.Errorf("load %s = %v, want %.2f", w.name, got, want)
		}
	}
	// Changed: uptime, messages/received twice, and the loads appear.
	// Unchanged values are not published again.
	if pub.got["$SYS/broker/messages/received"] != "700" {
		t.Errorf("messages/received = %q", pub.got["$SYS/broker/messages/received"])
	}
	published := pub.n - n
	if wantN := 1 + 2 + 5*3; published != wantN {
		t.Errorf("second update published %d messages, want %d (only changes)", published, wantN)
	}
}

type sourceFunc func() Counters

func (f sourceFunc) Counters() Counters { return f() }

func TestSysBytes(t *testing.T) {
	pub := &recorder{}
	s := NewSys(fakeSource{HasBytes: true, BytesIn: 7, BytesOut: 9}, pub, SysOptions{})
	s.Update(time.Now())
	if pub.got["$SYS/broker/bytes/received"] != "7" || pub.got["$SYS/broker/bytes/sent"] != "9" {
		t.Errorf("bytes: %v", pub.got)
	}
}

// The tree reaches a real client through the broker, retained, with the
// broker's real counts.
func TestSysOverMQTT(t *testing.T) {
	b, addr := startBroker(t)
	pub := dial(t, addr, "pub")
	pub.publish(t, "a/b", "kept", 1, true)
	s := NewSys(FromBroker(b), b, SysOptions{Version: "test"})
	if err := s.Update(time.Now()); err != nil {
		t.Fatal(err)
	}
	sub := dial(t, addr, "sys-reader")
	sub.subscribe(t, "$SYS/broker/#")
	got := map[string]string{}
	deadline := time.After(5 * time.Second)
	// The retained tree arrives in any order: wait for the topics checked
	// below (and at least 12 in all), however many the broker counts.
	want := []string{"$SYS/broker/version", "$SYS/broker/clients/connected", "$SYS/broker/messages/received",
		"$SYS/broker/retained messages/count", "$SYS/broker/subscriptions/count"}
	missing := func() bool {
		for _, k := range want {
			if _, ok := got[k]; !ok {
				return true
			}
		}
		return len(got) < 12
	}
	for missing() {
		select {
		case p := <-sub.Recv:
			if !p.Retain {
				t.Errorf("%s not retained", p.Topic)
			}
			got[p.Topic] = string(p.Payload)
		case <-deadline:
			t.Fatalf("only %d $SYS topics arrived: %v", len(got), got)
		}
	}
	for k, v := range map[string]string{
		"$SYS/broker/version":                 "starling test",
		"$SYS/broker/clients/connected":       "1",
		"$SYS/broker/messages/received":       "1",
		"$SYS/broker/retained messages/count": "1",
		"$SYS/broker/subscriptions/count":     "0",
	} {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	// A '#' subscription does not see $SYS ([MQTT-4.7.2-1]).
	all := dial(t, addr, "all")
	all.subscribe(t, "#")
	if err := s.Update(time.Now().Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	select {
	case p := <-all.Recv:
		if p.Topic != "a/b" {
			t.Errorf("'#' received %s", p.Topic)
		}
	case <-time.After(time.Second):
		t.Error("'#' did not get the retained a/b")
	}
	select {
	case p := <-all.Recv:
		t.Errorf("'#' received %s", p.Topic)
	case <-time.After(200 * time.Millisecond):
	}
}
