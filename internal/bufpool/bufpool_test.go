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

// TestClasses checks that every size up to Max gets the smallest class
// that holds it, wasting at most a fifth, and that class sizes ascend.
func TestClasses(t *testing.T) {
	if size(0) != 64 || size(len(pools)-1) != Max {
		t.Fatalf("classes span %d..%d, want 64..%d", size(0), size(len(pools)-1), Max)
	}
	for c := 1; c < len(pools); c++ {
		if size(c) <= size(c-1) {
			t.Fatalf("class %d: size %d not above class %d's %d", c, size(c), c-1, size(c-1))
		}
		if class(size(c)) != c {
			t.Fatalf("class(size(%d)=%d) = %d", c, size(c), class(size(c)))
		}
	}
	for n := 1; n <= Max; n++ {
		c := class(n)
		if size(c) < n || (c > 0 && size(c-1) >= n) {
			t.Fatalf("class(%d) = %d (size %d), not the smallest that holds it", n, c, size(c))
		}
		if n > 64 && size(c)*4 > n*5 {
			t.Fatalf("class(%d) has size %d: more than a fifth wasted", n, size(c))
		}
	}
	// A 64 KiB payload with its topic fits the 80 KiB class.
	if bp := Get(64<<10 + 20); cap(*bp) != 80<<10 {
		t.Fatalf("Get(64 KiB + 20): cap %d, want %d", cap(*bp), 80<<10)
	}
}
