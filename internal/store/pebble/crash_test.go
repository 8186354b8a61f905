package pebble

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/starling-mqtt/starling/internal/store"
	"github.com/starling-mqtt/starling/internal/store/storetest"
)

const crashEnv = "STARLING_STORE_CRASH_CHILD"

// TestCrashChild is the child of TestCrash: it commits synced batches from
// 8 goroutines until killed and prints each batch's number once Commit has
// returned. Each batch writes a message, an outbound record and a retained
// message, which must appear together or not at all.
func TestCrashChild(t *testing.T) {
	dir := os.Getenv(crashEnv)
	if dir == "" {
		t.Skip("run by TestCrash")
	}
	start, _ := strconv.ParseUint(os.Getenv(crashEnv+"_START"), 10, 64)
	s, err := Open(dir, Options{Logger: quiet()})
	if err != nil {
		fmt.Println("open:", err)
		os.Exit(2)
	}
	var next atomic.Uint64
	next.Store(start)
	var mu sync.Mutex
	out := bufio.NewWriter(os.Stdout)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				seq := next.Add(1)
				b := s.NewBatch()
				b.PutMessage(seq, storetest.FullMessage(int(seq)))
				b.PutOutbound("crash", seq, storetest.FullOutbound(seq))
				b.PutRetained(&store.Message{Topic: fmt.Sprintf("crash/%d", seq), Payload: []byte("x")})
				if err := b.Commit(true); err != nil {
					fmt.Println("commit:", err)
					os.Exit(2)
				}
				mu.Lock()
				fmt.Fprintln(out, seq)
				out.Flush()
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
}

// TestCrash SIGKILLs a child committing synced batches, several times, and
// checks after each kill that every batch the child reported as committed
// is in the store, whole, and that no batch is there in part.
func TestCrash(t *testing.T) {
	if os.Getenv(crashEnv) != "" {
		t.Skip("child")
	}
	cycles := 5
	if testing.Short() {
		cycles = 2
	}
	dir := t.TempDir()
	var start uint64
	for cycle := range cycles {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.count=1")
		cmd.Env = append(os.Environ(), crashEnv+"="+dir, fmt.Sprintf("%s_START=%d", crashEnv, start))
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		acked := map[uint64]bool{}
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		// Kill after a varying number of acknowledgements.
		killAt := 200 + cycle*150
		timeout := time.After(20 * time.Second)
		killed := false
		for !killed {
			select {
			case l, ok := <-lines:
				if !ok {
					t.Fatalf("child exited before the kill (cycle %d)", cycle)
				}
				n, err := strconv.ParseUint(l, 10, 64)
				if err != nil {
					t.Fatalf("child: %s", l)
				}
				acked[n] = true
				if len(acked) >= killAt {
					cmd.Process.Signal(syscall.SIGKILL)
					killed = true
				}
			case <-timeout:
				cmd.Process.Signal(syscall.SIGKILL)
				t.Fatalf("child acknowledged only %d batches in 20 s", len(acked))
			}
		}
		for l := range lines { // printed before the kill landed: acknowledged too
			if n, err := strconv.ParseUint(l, 10, 64); err == nil {
				acked[n] = true
			}
		}
		cmd.Wait()

		s := mustOpen(t, dir, Options{})
		c := storetest.LoadAll(t, s)
		s.Close()
		for n := range acked {
			if c.Messages[n] == nil {
				t.Fatalf("cycle %d: acknowledged batch %d lost", cycle, n)
			}
		}
		var maxSeq uint64
		for n, m := range c.Messages {
			if !storetest.Equal(m, storetest.FullMessage(int(n))) {
				t.Fatalf("cycle %d: message %d corrupt", cycle, n)
			}
			if c.Outbound["crash"][n] == nil || c.RetainedByTopic(fmt.Sprintf("crash/%d", n)) == nil {
				t.Fatalf("cycle %d: batch %d only partly there", cycle, n)
			}
			maxSeq = max(maxSeq, n)
		}
		if len(c.Outbound["crash"]) != len(c.Messages) || len(c.Retained) != len(c.Messages) {
			t.Fatalf("cycle %d: %d messages, %d outbound, %d retained", cycle, len(c.Messages), len(c.Outbound["crash"]), len(c.Retained))
		}
		t.Logf("cycle %d: %d acknowledged in this run, %d batches in the store", cycle, len(acked), len(c.Messages))
		start = maxSeq + 100
	}
}
