package loadgen

// streamWindow is how far below the highest sequence number seen a
// duplicate can still be told from a late (reordered) first delivery.
const streamWindow = 8192

// stream tracks one publisher's messages at one subscriber. It is owned by
// the subscriber's reader goroutine.
type stream struct {
	next   uint64 // highest sequence seen + 1
	bits   [streamWindow / 64]uint64
	unique uint64
	dup    uint64
	reord  uint64
}

func (s *stream) bit(seq uint64) (*uint64, uint64) {
	i := seq % streamWindow
	return &s.bits[i/64], 1 << (i % 64)
}

// add records seq and reports whether it is a first delivery.
func (s *stream) add(seq uint64) bool {
	if seq >= s.next {
		// Clear the bits of the sequence numbers skipped over: they held
		// numbers a window older.
		for i := s.next; i < seq && i < s.next+streamWindow; i++ {
			w, m := s.bit(i)
			*w &^= m
		}
		w, m := s.bit(seq)
		*w |= m
		s.next = seq + 1
		s.unique++
		return true
	}
	s.reord++
	if s.next-seq > streamWindow {
		s.unique++ // too late to tell; counted as a first delivery
		return true
	}
	w, m := s.bit(seq)
	if *w&m != 0 {
		s.reord--
		s.dup++
		return false
	}
	*w |= m
	s.unique++
	return true
}
