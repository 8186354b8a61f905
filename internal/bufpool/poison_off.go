//go:build !starling_poison

package bufpool

// Poison is off: see poison_on.go.
const Poison = false
