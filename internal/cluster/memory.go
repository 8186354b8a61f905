package cluster

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/starling-mqtt/starling/internal/broker"
	"github.com/starling-mqtt/starling/internal/session"
)

// A persistent session remembers the names of the messages it took
// (session.Session.Taken), so that a copy coming by another path is not
// delivered again. A session recovered from the queue stream after its
// node's loss learns those names from its stay's entries; but the node
// purges a session's entries (every purgeEvery, those below its oldest
// delivery still held, and all of them once it holds nothing), and a
// replay after that did not know what the purged entries had delivered:
// its publisher's resend, routed again under the message's name by the
// node that recovered the publisher, or a late relayed copy, was then
// taken as new (QoS 2 duplicates without DUP in the fault suite's
// kill-publisher-node and wipe-node runs).
//
// So the memory itself is in the stream: before the node purges a
// session's entries it writes, and waits for, an entry holding the
// session's memory (the last session.RememberMax names), and a stay
// marker carries the memory the session arrived with. The replay adds
// those names to what the stay's entries delivered. The purge stays below
// the memory entry it wrote, so the newest one always survives.

// takenRun is a run of names of one node's run (Origin.Instance), in the
// order the session took them: S holds the first sequence number, then
// each one's difference from the one before (small numbers in JSON).
type takenRun struct {
	I uint64  `json:"i"`
	S []int64 `json:"s"`
}

// encodeTaken packs names, oldest first, into runs.
func encodeTaken(os []session.Origin) []takenRun {
	var out []takenRun
	var prev uint64
	for _, o := range os {
		if o.IsZero() {
			continue
		}
		if len(out) == 0 || out[len(out)-1].I != o.Instance {
			out = append(out, takenRun{I: o.Instance, S: []int64{int64(o.Seq)}})
		} else {
			r := &out[len(out)-1]
			r.S = append(r.S, int64(o.Seq-prev))
		}
		prev = o.Seq
	}
	return out
}

// decodeTaken unpacks runs into names, oldest first.
func decodeTaken(rs []takenRun) []session.Origin {
	var out []session.Origin
	for _, r := range rs {
		var seq uint64
		for i, d := range r.S {
			if i == 0 {
				seq = uint64(d)
			} else {
				seq += uint64(d)
			}
			out = append(out, session.Origin{Instance: r.I, Seq: seq})
		}
	}
	return out
}

// arrivingMemory is the memory a session arriving as s carries to its
// stay's marker: its names but those of the deliveries it brings, which
// the replay learns from their own entries (see broker.SessionMemory).
func arrivingMemory(s *broker.SessionSnapshot) []session.Origin {
	held := make(map[session.Origin]bool, len(s.Out))
	for _, d := range s.Out {
		held[session.Origin(d.Msg.Origin)] = true
	}
	return slices.DeleteFunc(slices.Clone(s.Taken), func(o session.Origin) bool { return held[o] })
}

// ownSessionOf returns the client ID of a queue subject of this node's,
// ok false for another node's subject (or one that does not parse).
func (n *Node) ownSessionOf(subj string) (clientID string, ok bool) {
	rest, found := strings.CutPrefix(subj, queuePrefix)
	if !found {
		return "", false
	}
	ck, nk, found := strings.Cut(rest, ".")
	if !found || nk != key(n.cfg.Node) {
		return "", false
	}
	id, err := unkey(ck)
	return id, err == nil
}

// memoryOf returns the memory to keep before subject subj is purged: that
// of the session of this node's subject, held here; nil for none (not
// this node's subject, the session not held here, or it remembers
// nothing).
func (n *Node) memoryOf(subj string) []session.Origin {
	if n.cfg.LocalQueues || n.mir.js == nil {
		return nil
	}
	id, ok := n.ownSessionOf(subj)
	if !ok {
		return nil
	}
	taken, ok := n.b.SessionMemory(id)
	if !ok || len(taken) == 0 {
		return nil
	}
	return taken
}

// keepMemory writes taken, the memory of the session whose subject subj
// is about to be purged, and returns the stream sequence of that entry:
// the purge must stay below it. An error means the memory is not in the
// stream: the caller does not purge.
func (n *Node) keepMemory(ctx context.Context, subj string, taken []session.Origin) (uint64, error) {
	ack, err := n.mir.js.Publish(ctx, subj, mustJSON(queueEntry{T: encodeTaken(taken)}), jetstream.WithExpectStream(queueStream))
	if err != nil {
		return 0, fmt.Errorf("cluster: write the memory of subject %s to the queue stream: %w", subj, err)
	}
	n.noteMemory(subj, ack.Sequence)
	return ack.Sequence, nil
}

// noteMemory records seq as the last memory entry of subject subj, for
// forgetMemory.
func (n *Node) noteMemory(subj string, seq uint64) {
	n.mir.purgesMu.Lock()
	defer n.mir.purgesMu.Unlock()
	if n.mir.memSeq == nil {
		n.mir.memSeq = make(map[string]uint64)
	}
	n.mir.memSeq[subj] = max(n.mir.memSeq[subj], seq)
}

// noteMemoryAck is noteMemory for a stay marker, once the stream has it.
func (n *Node) noteMemoryAck(subj string, f jetstream.PubAckFuture) {
	select {
	case a := <-f.Ok():
		n.noteMemory(subj, a.Sequence)
	case <-f.Err():
	case <-n.ctx.Done():
	}
}

// purgedMemory forgets subj's memory entry once a purge below below has
// removed it.
func (n *Node) purgedMemory(subj string, below uint64) {
	n.mir.purgesMu.Lock()
	defer n.mir.purgesMu.Unlock()
	if m, ok := n.mir.memSeq[subj]; ok && (below == 0 || m < below) {
		delete(n.mir.memSeq, subj)
	}
}

// forgetMemory purges the memory this node wrote for clientID's session,
// which has ended here: its entries up to the last memory entry, nothing
// newer (a session the client starts again writes after them). Without
// it, a session that ended holding nothing left its memory in the stream
// for good.
func (n *Node) forgetMemory(clientID string) {
	subj := queueSubject(clientID, n.cfg.Node)
	n.mir.purgesMu.Lock()
	m := n.mir.memSeq[subj]
	n.mir.purgesMu.Unlock()
	if m > 0 {
		n.purgeQueued(subj, m+1)
	}
}
