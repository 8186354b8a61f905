// The node's graceful stop and its close.

package cluster

import (
	"os"
	"time"
)

// BeginShutdown starts a graceful stop, before the node's clients are
// disconnected. From now on the node neither takes nor confirms a message
// whose sender asks it for a confirmation (the sender relays it through
// the stream, to whichever node owns each session by then), takes nothing
// from the relay stream and takes no lost node's sessions over; it still
// answers hand-over requests until Close.
// Without this, a session claimed while the node stops could be recovered
// by the claiming node from its record and the queue stream while this
// node still confirmed messages for it, which its restart then dropped.
func (n *Node) BeginShutdown() {
	if !n.stopping.CompareAndSwap(false, true) {
		return
	}
	var ids []string
	for _, c := range n.b.Clients() {
		if c.Connected && c.Persistent {
			ids = append(ids, c.ClientID)
		}
	}
	n.leaving.Store(&ids)
	n.rel.consumersMu.Lock()
	for node, cancel := range n.rel.consumers {
		cancel() // what it had not acknowledged is redelivered to the next consumer
		delete(n.rel.consumers, node)
	}
	n.rel.consumersMu.Unlock()
	n.log.Info("cluster: stopping; forwarded messages are left to the relay stream")
}

// shutdownDrain bounds how long Close keeps answering hand-over requests
// for the sessions of the clients it disconnected. A variable for tests.
var shutdownDrain = 5 * time.Second

// awaitTransfers waits, up to wait, until the persistent sessions whose
// clients were connected when the stop began have been claimed by the
// nodes those clients reconnect to (each handed over with its state,
// rather than recovered later from its record), and no session offered to
// another node waits for that node's fetch or commit, nor a commit's
// answer for the new node to say it has it. A client that does
// not come back in time has its session left in this node's store.
func (n *Node) awaitTransfers(wait time.Duration) {
	deadline := time.Now().Add(wait)
	var ids []string
	if p := n.leaving.Load(); p != nil {
		ids = *p
	}
	for {
		n.xfersMu.Lock()
		// Every transfer: a session's state, a tail still to fetch, or a
		// commit's answer the new node has not said it has.
		open := len(n.xfers) + len(n.committed)
		n.xfersMu.Unlock()
		held := 0
		for _, id := range ids {
			if n.b.HasSession(id) {
				held++
			}
		}
		if open == 0 && held == 0 || !n.serving() {
			// Done, or no majority to record a claim in.
			n.log.Debug("cluster: stopping: hand-overs settled", "transfers_open", open, "sessions_held", held, "serving", n.serving())
			return
		}
		if time.Now().After(deadline) {
			n.log.Warn("cluster: stopping with sessions not handed over", "transfers_open", open, "sessions_held", held)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Close leaves the cluster and stops the embedded server. After a
// graceful stop's BeginShutdown and the broker's Close, it first lets the
// hand-overs under way finish (the disconnected clients' sessions being
// claimed by the nodes they reconnect to).
func (n *Node) Close() {
	n.BeginShutdown()
	if n.ctx != nil {
		n.awaitTransfers(shutdownDrain)
		// What the outbox holds is published now, and what comes after at
		// once (batch.go), before the confirmations are waited for.
		n.flushOut(true)
		n.flushForwards(5 * time.Second)
	}
	if n.cancel != nil {
		n.cancel()
	}
	if n.sc != nil {
		n.sc.Close()
	}
	if n.bc != nil {
		n.bc.Close()
	}
	if n.pc != nil {
		n.pc.Close()
	}
	n.wg.Wait()
	n.xfersMu.Lock()
	for id, o := range n.xfers {
		// Still here, and in the store: the other node gave up or will.
		o.timer.Stop()
		delete(n.xfers, id)
	}
	for id, c := range n.committed {
		c.timer.Stop()
		delete(n.committed, id)
	}
	n.xfersMu.Unlock()
	if n.ns != nil {
		n.ns.Shutdown()
		n.ns.WaitForShutdown()
	}
	n.cleanup()
}

func (n *Node) cleanup() {
	if n.tmpDir != "" {
		os.RemoveAll(n.tmpDir)
	}
}
