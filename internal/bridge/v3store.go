package bridge

import (
	"bytes"
	"slices"
	"sync"

	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/eclipse/paho.mqtt.golang/packets"
)

// copyStore is paho.mqtt.golang's in-flight store, keeping each packet
// encoded and handing out a fresh copy. The library's own memory store
// hands back the packet it was given: on reconnect it sets DUP on a
// stored PUBLISH while its writer may be encoding that same packet for a
// publish made at that moment, a data race the race detector reports.
// (The bridge's own store keeps what must survive a restart; this one
// only lives with the connection.)
type copyStore struct {
	mu   sync.Mutex
	keys []string
	pkts map[string][]byte
}

var _ mqtt.Store = (*copyStore)(nil)

func newCopyStore() *copyStore { return &copyStore{pkts: make(map[string][]byte)} }

func (s *copyStore) Open()  {}
func (s *copyStore) Close() {}

func (s *copyStore) Put(key string, p packets.ControlPacket) {
	var b bytes.Buffer
	if err := p.Write(&b); err != nil {
		return // not kept: the library then does not resend it, as after a lost store
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pkts[key]; !ok {
		s.keys = append(s.keys, key)
	}
	s.pkts[key] = b.Bytes()
}

func (s *copyStore) Get(key string) packets.ControlPacket {
	s.mu.Lock()
	b, ok := s.pkts[key]
	s.mu.Unlock()
	if !ok {
		return nil
	}
	p, err := packets.ReadPacket(bytes.NewReader(b))
	if err != nil {
		return nil
	}
	return p
}

func (s *copyStore) All() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.keys)
}

func (s *copyStore) Del(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.pkts[key]; !ok {
		return
	}
	delete(s.pkts, key)
	s.keys = slices.DeleteFunc(s.keys, func(k string) bool { return k == key })
}

func (s *copyStore) Reset() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.keys, s.pkts = nil, make(map[string][]byte)
}
