package session

import (
	"reflect"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/bufpool"
	"github.com/starling-mqtt/starling/internal/packet"
)

// TestRecycleClearsEveryField: a pooled message going back to its pool
// keeps nothing of its life, whatever fields Message has or gains (a field
// left set would travel with the next message that reuses it).
func TestRecycleClearsEveryField(t *testing.T) {
	m := NewPooled()
	one := byte(1)
	m.Topic, m.Payload, m.QoS, m.Retain = "a/b", []byte("x"), 1, true
	m.Props = packet.Properties{PayloadFormat: &one, ContentType: "c", CorrelationData: []byte("d")}
	m.Expiry, m.Publisher, m.ID = time.Unix(1, 0), "pub", 9
	m.Origin = Origin{Instance: 3, Seq: 4}
	m.Hold = testRelease{}
	m.Own(bufpool.Get(10))
	o := newOutgoing()
	m.Ref()
	o.Msg = m
	if _, err := o.AppendPacket(nil, packet.V311); err != nil {
		t.Fatal(err)
	}
	// Every exported field set: one added later must be set above too.
	v := reflect.ValueOf(m).Elem()
	for i := range v.NumField() {
		if f := v.Type().Field(i); f.IsExported() && v.Field(i).IsZero() {
			t.Fatalf("field %s not set by this test", f.Name)
		}
	}
	o.Release()
	m.Unref() // last reference: recycled (m is not used by anyone else here)
	for i := range v.NumField() {
		f := v.Type().Field(i)
		if f.Name == "pooled" {
			continue
		}
		if !v.Field(i).IsZero() {
			t.Errorf("recycled message keeps field %s", f.Name)
		}
	}
}

// testRelease is a Release that is done at once.
type testRelease struct{}

func (testRelease) Done() <-chan struct{} { return closedChan }
func (testRelease) OK() bool              { return true }

var closedChan = func() chan struct{} { c := make(chan struct{}); close(c); return c }()
