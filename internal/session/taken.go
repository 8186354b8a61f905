package session

// What a session remembers of the messages it took (Taken), so that a
// copy reaching it again by another path is not delivered as new.

// memory holds the origins of the messages a session took, the last
// RememberMax of them, with ring in the order taken (a circle from ringNext
// once full); see Taken.
type memory struct {
	taken    map[Origin]struct{}
	ring     []Origin
	ringNext int
	takenN   uint64 // origins taken so far: the newest is the takenN-th
}

// memory returns s.mem, made if needed.
func (s *Session) memory() *memory {
	if s.mem == nil {
		s.mem = &memory{taken: make(map[Origin]struct{})}
	}
	return s.mem
}

// RememberMax bounds the origins a persistent session remembers: a copy
// of a message that comes more than that many messages after the first
// is taken again.
const RememberMax = 4096

// Taken reports whether a persistent session already took the message
// of origin o, among its last RememberMax messages: a copy that reaches
// it again by another path (relayed, replayed after a node's loss) must
// not be delivered as a new message. A session that is not persistent
// remembers wills only (WillOrigin).
func (s *Session) Taken(o Origin) bool {
	if o.IsZero() || s.mem == nil {
		return false
	}
	_, ok := s.mem.taken[o]
	return ok
}

// remember notes that the session took the message of origin o; with a
// journal j, also in j (a store keeps the memory).
func (s *Session) remember(o Origin, j Journal) {
	if o.IsZero() || s.ExpiryInterval == 0 && !o.IsWill() {
		return
	}
	m := s.memory()
	if _, ok := m.taken[o]; ok {
		return
	}
	if len(m.ring) < RememberMax {
		m.ring = append(m.ring, o)
	} else {
		delete(m.taken, m.ring[m.ringNext])
		m.ring[m.ringNext] = o
		m.ringNext = (m.ringNext + 1) % RememberMax
	}
	m.taken[o] = struct{}{}
	m.takenN++
	if j != nil {
		j.PutTaken(s.ClientID, uint16((m.takenN-1)%RememberMax), o, m.takenN)
	}
}

// RestoreTaken adds what a store kept of the memory: the n-th origin the
// session took. Call in ascending n, after setting ExpiryInterval.
func (s *Session) RestoreTaken(o Origin, n uint64) {
	if o.IsZero() || s.ExpiryInterval == 0 && !o.IsWill() {
		return // remember would keep nothing: make no memory
	}
	s.remember(o, nil)
	m := s.memory()
	m.takenN = max(m.takenN, n)
}

// TakenRecords calls fn for every origin the session remembers, oldest
// first, as PutTaken would have recorded it: for a store that must hold
// the memory of a session installed whole (handed over).
func (s *Session) TakenRecords(fn func(slot uint16, o Origin, n uint64)) {
	r := s.Remembered()
	if len(r) == 0 {
		return
	}
	for i, o := range r {
		n := s.mem.takenN - uint64(len(r)) + uint64(i) + 1
		fn(uint16((n-1)%RememberMax), o, n)
	}
}

// Remembered returns the origins the session remembers, oldest first:
// what another node must know to continue the session (RememberAll).
func (s *Session) Remembered() []Origin {
	if s.mem == nil {
		return []Origin{}
	}
	m := s.mem
	out := make([]Origin, 0, len(m.ring))
	out = append(out, m.ring[m.ringNext:]...)
	return append(out, m.ring[:m.ringNext]...)
}

// RememberAll adds origins, oldest first, to those the session
// remembers; set ExpiryInterval first.
func (s *Session) RememberAll(os []Origin) {
	for _, o := range os {
		s.remember(o, nil)
	}
}
