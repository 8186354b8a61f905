//go:build starling_poison

package bufpool

// Poison is set by the starling_poison build tag: buffers are overwritten
// as they go back to their pools, so that a use after release shows at
// once as poisoned bytes (tests of pooled messages).
const Poison = true
