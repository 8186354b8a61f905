package cluster

// Flow control across nodes (docs/flow-control.md). A message for
// persistent sessions here whose sender asked for a confirmation, and
// that found a session full, is kept past that session's bound; its
// confirmation then waits until the session has room again (or met the
// slow-consumer policy), so that its publisher, on the sending node, is
// held back as a local publisher would be. Meanwhile this node tells the
// sender, and again every holdRefresh, that it has the message stored and
// replicated ("held"): the sender does not relay it after confirmWait,
// and lets its publisher go if these reminders stop for holdLapse (this
// node restarted, say) or this node is down: the message is safe here
// all the same.
//
// A message a persistent session here dropped (past its hard limit: the
// session's reader is stalled, or hundreds of publishers at once) is not
// confirmed at all: its sender relays it through the stream, and the relay
// consumer leaves it there while the session has no room for it.

import (
	"encoding/binary"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/starling-mqtt/starling/internal/broker"
)

const (
	hdrHeld = "Stl-Held" // on a confirmation: stored, but wait for the final one
	// holdRefresh is how often a node reminds the senders of the messages
	// whose confirmation waits for room that it holds them.
	holdRefresh = time.Second
	// holdLapse is when a sender stops waiting for a node that said it
	// holds a message and has not said so again since.
	holdLapse = 5 * holdRefresh
)

// confirmRooms confirms a batch's messages (seqs[j] from replies[j]; the
// batch's message i is replies[replyOf[i]], or not asked for -1): at once
// those that found room, after room is made those that found sessions
// full, and not those a session here dropped.
func (n *Node) confirmRooms(replies []string, seqs []uint64, replyOf []int, rooms []*broker.Room) {
	var nowR []string
	var nowS []uint64
	var wait []heldConfirm
	for i, j := range replyOf {
		if j < 0 {
			continue
		}
		switch r := rooms[i]; {
		case r == nil:
			nowR, nowS = append(nowR, replies[j]), append(nowS, seqs[j])
		case r.Overflow:
			// Its sender relays it after confirmWait.
		default:
			wait = append(wait, heldConfirm{replies[j], seqs[j], r})
		}
	}
	n.confirm(nowR, nowS)
	if len(wait) == 0 {
		return
	}
	n.sayHeld(wait)
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		last := time.Now()
		for i, w := range wait {
			// The reminders go on across the batch: one wait may end
			// before the next is due, and the last ones wait longest.
			remind := func() { n.sayHeld(wait[i:]); last = time.Now() }
			if time.Since(last) >= holdRefresh {
				remind()
			}
			// Whatever happens, the message is stored and replicated
			// here: a stopping node confirms what is left.
			w.room.Wait(n.ctx.Done(), holdRefresh, remind)
			n.confirm([]string{w.reply}, []uint64{w.seq})
		}
	}()
}

// heldConfirm is a confirmation waiting for room.
type heldConfirm struct {
	reply string
	seq   uint64
	room  *broker.Room
}

// sayHeld tells the senders of ws that this node holds their messages
// and confirms them once there is room.
func (n *Node) sayHeld(ws []heldConfirm) {
	for _, w := range ws {
		msg := nats.NewMsg(w.reply)
		msg.Header.Set(hdrHeld, "1")
		b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(n.cfg.Node)), w.seq)
		msg.Data = append(b, n.cfg.Node...)
		n.pc.PublishMsg(msg)
	}
}
