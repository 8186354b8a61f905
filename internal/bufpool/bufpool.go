// Package bufpool keeps byte buffers in size classes for memory whose owner
// is known to give it back: the body of a QoS 0 PUBLISH read by a
// connection and kept by the message it became, and the encodings shared
// by that message's deliveries.
//
// Classes are 64 B, then four per doubling (80, 96, 112, 128 B, ...,
// 80 KiB, 96 KiB, 112 KiB, 128 KiB): a buffer wastes at most a fifth of
// its size, so a 64 KiB payload with its topic (64 KiB + a few bytes)
// takes an 80 KiB buffer, not a 128 KiB one.
package bufpool

import (
	"math/bits"
	"sync"
)

const (
	minShift = 6  // 64 B
	maxShift = 17 // 128 KiB
	// Max is the largest size served from a pool; Get makes larger
	// buffers and Put drops them.
	Max = 1 << maxShift
	// steps is the number of classes per doubling above 64 B.
	steps = 4
)

var pools [1 + (maxShift-minShift)*steps]sync.Pool

// class returns the index of the smallest class that holds n bytes
// (n <= Max).
func class(n int) int {
	if n <= 1<<minShift {
		return 0
	}
	k := bits.Len(uint(n-1)) - 1 // 1<<k < n <= 1<<(k+1)
	quarter := 1 << (k - 2)
	sub := (n - 1<<k + quarter - 1) / quarter // 1..steps
	return (k-minShift)*steps + sub
}

// size returns the capacity of class c.
func size(c int) int {
	if c == 0 {
		return 1 << minShift
	}
	k := (c-1)/steps + minShift
	sub := (c-1)%steps + 1
	return 1<<k + sub<<(k-2)
}

// Get returns a buffer of length n. Its contents are undefined: callers
// overwrite it whole (a body read into it, an encoding appended), so a
// reused buffer is not cleared. A *[]byte is pooled rather than the slice
// so that Put does not allocate.
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
	b := make([]byte, n, size(c))
	return &b
}

// Put gives a buffer from Get back. Nothing may use it afterwards.
func Put(bp *[]byte) {
	if bp == nil {
		return
	}
	c := cap(*bp)
	if c > Max || c < 1<<minShift {
		return
	}
	k := class(c)
	if size(k) != c {
		return // not one of ours
	}
	if Poison {
		PoisonBytes((*bp)[:c])
	}
	*bp = (*bp)[:0]
	pools[k].Put(bp)
}

// PoisonBytes overwrites b with a pattern no test payload has (only with
// the starling_poison build tag; see Poison).
func PoisonBytes(b []byte) {
	for i := range b {
		b[i] = 0xDB
	}
}
