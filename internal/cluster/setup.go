package cluster

import (
	"context"
	"time"
)

const (
	// setupFirstTimeout is the first timeout of a request that sets the
	// node up; each retry doubles it, up to setupMaxTimeout. A request
	// sent before the cluster has a JetStream leader goes unanswered:
	// with a single 3-second timeout, every node start paid it once
	// (ready after 3.3 s instead of 0.4 s, and so did each restart).
	setupFirstTimeout = 500 * time.Millisecond
	setupMaxTimeout   = 3 * time.Second
	// leaderPoll is how often a request that sets the node up looks
	// whether this node knows its JetStream leader yet.
	leaderPoll = 10 * time.Millisecond
)

// untilSetUp runs try (creating or opening a bucket or a stream) until it
// succeeds, reporting false once the node is closing. Before each
// attempt it waits, for at most the attempt's timeout, until this node
// is current with the JetStream meta leader: a request sent earlier is
// lost, not queued.
func (n *Node) untilSetUp(what string, try func(ctx context.Context) error) bool {
	timeout := setupFirstTimeout
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, time.Second) {
		n.awaitMetaLeader(timeout)
		ctx, cancel := context.WithTimeout(n.ctx, timeout)
		err := try(ctx)
		cancel()
		if err == nil {
			return true
		}
		n.log.Debug("cluster: waiting for jetstream", "for", what, "err", err)
		timeout = min(2*timeout, setupMaxTimeout)
		select {
		case <-n.ctx.Done():
			return false
		case <-time.After(delay):
		}
	}
}

// awaitMetaLeader waits, for at most max, until this node's JetStream is
// current with its meta leader. It is a hint, not a gate: the leader
// answers a request whether or not this node's replica has caught up.
func (n *Node) awaitMetaLeader(max time.Duration) {
	if n.ns == nil || n.ns.JetStreamIsCurrent() {
		return
	}
	tick := time.NewTicker(leaderPoll)
	defer tick.Stop()
	deadline := time.NewTimer(max)
	defer deadline.Stop()
	for !n.ns.JetStreamIsCurrent() {
		select {
		case <-n.ctx.Done():
			return
		case <-deadline.C:
			return
		case <-tick.C:
		}
	}
}
