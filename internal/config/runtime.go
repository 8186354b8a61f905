package config

// derivedMemoryHeadroom is what the derived memory limit allows beyond
// twice the queued-bytes bound: the broker's own structures, connections,
// the store's caches.
const derivedMemoryHeadroom = 512 << 20

// RuntimeMemoryLimit is the soft memory limit MemoryLimit asks for, in
// bytes: itself when set, twice MaxTotalQueuedBytes plus 512 MiB when 0
// (queued messages are held once in queues and about once more by their
// encodings and the collector's headroom), and -1 for none.
func (l Limits) RuntimeMemoryLimit() int64 {
	switch {
	case l.MemoryLimit != 0:
		return l.MemoryLimit
	case l.MaxTotalQueuedBytes > 0:
		return 2*l.MaxTotalQueuedBytes + derivedMemoryHeadroom
	}
	return -1
}
