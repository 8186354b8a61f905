package bufpool

import "testing"

func TestGetPut(t *testing.T) {
	for _, n := range []int{0, 1, 64, 65, 100, 1000, 4096, Max, Max + 1} {
		bp := Get(n)
		if len(*bp) != n {
			t.Fatalf("Get(%d): len %d", n, len(*bp))
		}
		if n <= Max && cap(*bp) < n {
			t.Fatalf("Get(%d): cap %d", n, cap(*bp))
		}
		Put(bp)
	}
	if raceEnabled {
		return // sync.Pool drops some of what it is given under -race
	}
	// Steady state: a buffer that goes back is reused without allocating.
	Put(Get(200))
	if a := testing.AllocsPerRun(100, func() { Put(Get(200)) }); a != 0 {
		t.Fatalf("%v allocations per Get/Put, want 0", a)
	}
}
