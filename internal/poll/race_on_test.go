//go:build race

package poll

// raceEnabled: sync.Pool drops some of what it is given under -race, so
// allocation counts mean nothing there.
const raceEnabled = true
