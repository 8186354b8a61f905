// Package bufpool keeps byte buffers in size classes (powers of two from
// 64 B to 64 KiB) for memory whose owner is known to give it back: the
// body of a QoS 0 PUBLISH read by a connection and kept by the message it
// became, and the encodings shared by that message's deliveries.
package bufpool

import (
	"math/bits"
	"sync"
)

const (
	minShift = 6  // 64 B
	maxShift = 16 // 64 KiB
	// Max is the largest size served from a pool; Get makes larger
	// buffers and Put drops them.
	Max = 1 << maxShift
)

var pools [maxShift - minShift + 1]sync.Pool

func class(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	return bits.Len(uint(n-1)) - minShift
}

// Get returns a buffer of length n. Its contents are undefined. A *[]byte
// is pooled rather than the slice so that Put does not allocate.
func Get(n int) *[]byte {
	if n > Max {
		b := make([]byte, n)
		return &b
	}
	c := class(n)
	if v := pools[c].Get(); v != nil {
		bp := v.(*[]byte)
		*bp = (*bp)[:n]
		return bp
	}
	b := make([]byte, n, 1<<(c+minShift))
	return &b
}

// Put gives a buffer from Get back. Nothing may use it afterwards.
func Put(bp *[]byte) {
	if bp == nil {
		return
	}
	c := cap(*bp)
	if c > Max || c < 1<<minShift || c&(c-1) != 0 {
		return
	}
	if Poison {
		PoisonBytes((*bp)[:c])
	}
	*bp = (*bp)[:0]
	pools[class(c)].Put(bp)
}

// PoisonBytes overwrites b with a pattern no test payload has (only with
// the starling_poison build tag; see Poison).
func PoisonBytes(b []byte) {
	for i := range b {
		b[i] = 0xDB
	}
}
