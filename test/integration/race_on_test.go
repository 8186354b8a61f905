//go:build race

package integration

// raceEnabled reports whether the race detector is on (it slows
// everything several times).
const raceEnabled = true
