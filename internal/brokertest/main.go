package brokertest

import (
	"flag"
	"runtime"
	"strconv"
	"testing"
)

// RunParallel runs a package's tests with up to n of those that call
// t.Parallel at once, unless -parallel was given. The default, GOMAXPROCS,
// suits tests that keep the CPU busy; tests that mostly wait on protocol
// time measured by the wall clock (cluster elections and heartbeats, a
// node declared lost after seconds of silence, a dashboard refreshing
// every second) leave a 2-core machine idle with two at a time. Call it
// from TestMain: os.Exit(brokertest.RunParallel(m, 6)). It returns m.Run's
// code.
func RunParallel(m *testing.M, n int) int {
	DefaultParallel(n)
	return m.Run()
}

// DefaultParallel is RunParallel without m.Run, for a TestMain that runs
// the tests through another wrapper (goleak.VerifyTestMain).
func DefaultParallel(n int) {
	if !flag.Parsed() {
		flag.Parse()
	}
	given := false
	flag.Visit(func(f *flag.Flag) { given = given || f.Name == "test.parallel" })
	if !given && n > runtime.GOMAXPROCS(0) {
		flag.Set("test.parallel", strconv.Itoa(n))
	}
}
