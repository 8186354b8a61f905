package pebble

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"testing"

	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/storetest"
)

// seeds are valid encodings of each value kind; the committed corpus under
// testdata/fuzz holds them too, plus truncations (see TestWriteFuzzSeeds).
func seeds() map[string][][]byte {
	sess := storetest.FullSession("c")
	noWill := &store.Session{ClientID: "c", Version: 4}
	sub := storetest.FullSubscription("a/+/b")
	other := storetest.FullSubscription("a/+/b")
	other.Options.Filter = "different"
	return map[string][][]byte{
		"FuzzDecodeMessage":      {encodeMessage(storetest.FullMessage(1)), encodeMessage(&store.Message{})},
		"FuzzDecodeSession":      {encodeSession(sess), encodeSession(noWill)},
		"FuzzDecodeSubscription": {encodeSubscription(sub), encodeSubscription(other), encodeSubscription(&store.Subscription{})},
		"FuzzDecodeOutbound":     {encodeOutbound(storetest.FullOutbound(7)), encodeOutbound(&store.Outbound{})},
		"FuzzDecodeInbound":      {inboundValue, {}, {2}},
	}
}

func addSeeds(f *testing.F, name string) {
	for _, s := range seeds()[name] {
		f.Add(s)
	}
	f.Add([]byte{})
	f.Add([]byte{valueVersion})
	f.Add([]byte{9, 1, 2, 3})
}

// Each fuzz target: decoding never panics, and what decodes encodes to a
// value that decodes to the same record.

func FuzzDecodeMessage(f *testing.F) {
	addSeeds(f, "FuzzDecodeMessage")
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			return
		}
		m2, err := decodeMessage(encodeMessage(m))
		if err != nil || !reflect.DeepEqual(m, m2) {
			t.Fatalf("re-encoding changed %+v into %+v (%v)", m, m2, err)
		}
	})
}

func FuzzDecodeSession(f *testing.F) {
	addSeeds(f, "FuzzDecodeSession")
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeSession("c", b)
		if err != nil {
			return
		}
		s2, err := decodeSession("c", encodeSession(s))
		if err != nil || !reflect.DeepEqual(s, s2) {
			t.Fatalf("re-encoding changed %+v into %+v (%v)", s, s2, err)
		}
	})
}

func FuzzDecodeSubscription(f *testing.F) {
	addSeeds(f, "FuzzDecodeSubscription")
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := decodeSubscription("a/+/b", b)
		if err != nil {
			return
		}
		s2, err := decodeSubscription("a/+/b", encodeSubscription(s))
		if err != nil || !reflect.DeepEqual(s, s2) {
			t.Fatalf("re-encoding changed %+v into %+v (%v)", s, s2, err)
		}
	})
}

func FuzzDecodeOutbound(f *testing.F) {
	addSeeds(f, "FuzzDecodeOutbound")
	f.Fuzz(func(t *testing.T, b []byte) {
		o, err := decodeOutbound(b)
		if err != nil {
			return
		}
		o2, err := decodeOutbound(encodeOutbound(o))
		if err != nil || !reflect.DeepEqual(o, o2) {
			t.Fatalf("re-encoding changed %+v into %+v (%v)", o, o2, err)
		}
	})
}

func FuzzDecodeInbound(f *testing.F) {
	addSeeds(f, "FuzzDecodeInbound")
	f.Fuzz(func(t *testing.T, b []byte) {
		if decodeInbound(b) == nil && !bytes.Equal(b, inboundValue) {
			t.Fatalf("accepted %x", b)
		}
	})
}

// FuzzVisit feeds arbitrary keys and values to Load's record decoding.
func FuzzVisit(f *testing.F) {
	f.Add(sessionKey("c"), encodeSession(storetest.FullSession("c")))
	f.Add(messageKey(7), encodeMessage(storetest.FullMessage(7)))
	f.Add(subscriptionKey("c", "a/#"), encodeSubscription(storetest.FullSubscription("a/#")))
	f.Add(outboundKey("c", 9), encodeOutbound(storetest.FullOutbound(9)))
	f.Add(inboundKey("c", 3), inboundValue)
	f.Add(retainedKey("t"), encodeMessage(storetest.FullMessage(1)))
	f.Add([]byte{kindOutbound, 'c'}, []byte{1})
	nop := store.Visitor{
		Session:      func(*store.Session) error { return nil },
		Message:      func(uint64, *store.Message) error { return nil },
		Subscription: func(string, *store.Subscription) error { return nil },
		Outbound:     func(string, uint64, *store.Outbound) error { return nil },
		Inbound:      func(string, uint16) error { return nil },
		Retained:     func(*store.Message) error { return nil },
	}
	f.Fuzz(func(t *testing.T, k, v []byte) {
		if len(k) == 0 || k[0] < kindSession || k[0] >= kindEnd {
			return // load never passes these to visit
		}
		_ = visit(nop, k, v)
	})
}

// TestWriteFuzzSeeds rewrites testdata/fuzz from seeds() when
// STARLING_WRITE_SEEDS=1; otherwise it checks the committed seeds exist.
func TestWriteFuzzSeeds(t *testing.T) {
	write := os.Getenv("STARLING_WRITE_SEEDS") == "1"
	for name, vals := range seeds() {
		dir := filepath.Join("testdata", "fuzz", name)
		var all [][]byte
		for _, v := range vals {
			all = append(all, v)
			for _, cut := range []int{1, len(v) / 2, len(v) - 1} { // truncations
				if cut > 0 && cut < len(v) {
					all = append(all, v[:cut])
				}
			}
		}
		for i, v := range all {
			file := filepath.Join(dir, fmt.Sprintf("seed-%02d", i))
			body := "go test fuzz v1\n[]byte(" + strconv.Quote(string(v)) + ")\n"
			if write {
				os.MkdirAll(dir, 0o755)
				if err := os.WriteFile(file, []byte(body), 0o644); err != nil {
					t.Fatal(err)
				}
			} else if _, err := os.Stat(file); err != nil {
				t.Errorf("seed %s missing: run STARLING_WRITE_SEEDS=1 go test -run TestWriteFuzzSeeds", file)
			}
		}
	}
}
