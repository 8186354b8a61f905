package cluster

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/starling-mqtt/starling/internal/broker"
)

// A session moves between nodes in two phases. The new node asks the owner
// (stl.claim.<owner>); the owner closes the client's connection, keeps the
// session as it is and answers with the size of its state (inline when it
// fits in one message). The new node fetches the state in chunks
// (stl.xfer.<owner>, op "get"), takes ownership in the sessions bucket, and
// only then tells the owner to let its copy go (op "commit"). Until then
// the owner discards nothing: a transfer that fails is aborted and the
// session, with every queued message, stays where it was.

const (
	// maxChunk bounds the state sent in one message, well under the
	// smallest max payload any node runs with (1 MiB).
	maxChunk = 512 << 10
	// chunkTries is how often the new node asks for one chunk.
	chunkTries = 3
	// errHeader carries a transfer error in a reply.
	errHeader = "Stl-Error"
)

// xferIdle is how long the owner holds a prepared session without hearing
// from the new node; then the sessions bucket decides. A variable for tests.
var xferIdle = 10 * time.Second

type claimRequest struct {
	ClientID string `json:"client_id"`
	Clean    bool   `json:"clean"`
	Node     string `json:"node,omitempty"` // the node claiming
}

// claimReply answers a claim. An empty Xfer means there is nothing to move
// and nothing to confirm.
type claimReply struct {
	Xfer   string          `json:"xfer,omitempty"`
	Size   int             `json:"size,omitempty"`
	Chunks int             `json:"chunks,omitempty"`
	CRC    uint32          `json:"crc,omitempty"`
	Inline json.RawMessage `json:"inline,omitempty"`
}

type xferRequest struct {
	ID    string `json:"id"`
	Op    string `json:"op"` // get, commit or abort
	Chunk int    `json:"chunk,omitempty"`
}

// outgoing is a session this node is handing over.
type outgoing struct {
	clientID string
	to       string // the node taking the session
	h        *broker.HandOff
	data     []byte // the encoded snapshot
	timer    *time.Timer
}

// incoming is a session received from its owner, not yet confirmed.
type incoming struct {
	owner, xfer string
	snap        *broker.SessionSnapshot
}

// errHandOver marks a hand-over that failed while the owner was alive: it
// keeps the session, so the connect must not go ahead without it.
var errHandOver = fmt.Errorf("cluster: session hand-over failed: %w", broker.ErrSessionMoving)

// recoverOwn installs a session this node owns in the sessions bucket but
// does not hold, from the record and the entries it mirrored to the queue
// stream, for its client reconnecting now; those entries are replaced by
// the ones the install writes.
func (n *Node) recoverOwn(clientID string, rec *broker.SessionSnapshot, clean bool) (*broker.SessionSnapshot, error) {
	s, last, err := n.withQueuedUpTo(rec, n.cfg.Node, clean)
	if err != nil {
		// Refused, so that the client retries once the stream is
		// readable, rather than start without its messages.
		return nil, fmt.Errorf("%w: claim %q: recover this node's own session: %v", errHandOver, clientID, err)
	}
	n.log.Warn("cluster: session owned here but not held (store lost?); recovered from its record and the queue stream",
		"client_id", clientID, "deliveries", len(s.Out))
	if s.Session.ExpiryInterval > 0 && !n.b.HasSession(clientID) {
		n.markStay(clientID, arrivingMemory(s)) // before the install writes its entries
	}
	n.b.AdoptOrphan(s, true, clean)
	if last > 0 {
		n.purgeQueued(queueSubject(clientID, n.cfg.Node), last+1)
	}
	return nil, nil
}

// Claim makes this node the owner of clientID's session. If another node
// owns it, that node hands it over (closing its connection); if that node
// is gone, the subscriptions it last recorded are recovered. An error that
// wraps broker.ErrSessionMoving means the owner kept the session and the
// connect should be refused; other errors mean the replicated state is
// unavailable (they wrap broker.ErrNotReady: the connect is refused too).
func (n *Node) Claim(clientID string, clean bool) (*broker.SessionSnapshot, error) {
	if err := n.awaitServing(); err != nil {
		return nil, err
	}
	// Bounded well inside the connect timeout: without a quorum the
	// connect goes ahead on this node's state.
	ctx, cancel := n.claimContext()
	defer func() { cancel() }()
	k := key(clientID)
	mine := mustJSON(record{Node: n.cfg.Node})
	var in *incoming
	claimed := false // the record names this node now
	defer func() {
		if in != nil {
			n.abortIncoming(in)
		}
		// Whatever was stashed for the arriving session (arrive.go) is
		// delivered to it if it is held here now, dropped otherwise.
		n.arrived(clientID, claimed && n.b.HasSession(clientID))
	}()
	// fail reports a failed claim; with a transfer under way, the owner
	// keeps the session and the connect must wait for another attempt.
	fail := func(err error) (*broker.SessionSnapshot, error) {
		if in != nil && in.xfer != "" {
			return nil, fmt.Errorf("%w: claim %q: %v", errHandOver, clientID, err)
		}
		// Going ahead on this node's state could leave the session on
		// two nodes: refused, so that the client retries.
		return nil, fmt.Errorf("cluster: claim %q: %v: %w", clientID, err, broker.ErrNotReady)
	}
	orphanOf := "" // the lost owner whose record was recovered
	var orphan *broker.SessionSnapshot
	ok := func() (*broker.SessionSnapshot, error) {
		claimed = true
		if !n.b.HasSession(clientID) && (orphan != nil && orphan.Session.ExpiryInterval > 0 ||
			in != nil && in.snap != nil && in.snap.Session.ExpiryInterval > 0) {
			// Before the install writes its entries, with the memory
			// the session arrives with.
			arriving := orphan
			if arriving == nil {
				arriving = in.snap
			}
			n.markStay(clientID, arrivingMemory(arriving))
		}
		if orphan != nil {
			// Adopted only once the record names this node: a claim
			// that fails leaves no second copy here, and publishes no
			// will that the node taking the lost node over would
			// publish again.
			n.b.AdoptOrphan(orphan, true, clean)
			// Ours now, with the deliveries it mirrored: its copy in the
			// stream is no longer needed.
			n.purgeQueued(queueSubject(clientID, orphanOf), 0)
		}
		if in == nil {
			return nil, nil
		}
		got := in
		in = nil
		n.commitIncoming(got)
		if f := claimedHook.Load(); f != nil {
			(*f)(clientID)
		}
		// Installed here, rather than by the broker once Claim has
		// returned, so that what was stashed for it meanwhile is
		// delivered to it (deferred above) before its client attaches;
		// the broker's own Adopt then finds it and does nothing.
		if got.snap != nil {
			n.b.Adopt(got.snap)
		}
		return got.snap, nil
	}
	asked := "" // the owner last asked to hand the session over
	// After a lost compare-and-set (or create), the record is read again
	// from the bucket's leader, newer than the revision refused (fresh.go).
	lost, refused := false, uint64(0)
	for attempt := 0; attempt < 8; attempt++ {
		var e jetstream.KeyValueEntry
		var err error
		if lost {
			e, err = n.readNewer(ctx, k, refused)
		} else if e, err = n.sessions.Get(ctx, k); err == nil {
			if f := replicaReadFault.Load(); f != nil {
				e = (*f)(clientID, e)
			}
		}
		lost = false
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			var rev uint64
			if rev, err = n.sessions.Create(ctx, k, mine); err == nil {
				n.noteOwner(k, rev, record{Node: n.cfg.Node})
				return ok()
			}
			if errors.Is(err, jetstream.ErrKeyExists) {
				lost, refused = true, 0
				continue
			}
			return fail(err)
		}
		if err != nil {
			return fail(err)
		}
		var r record
		if err := json.Unmarshal(e.Value(), &r); err != nil {
			r = record{}
		}
		// again: the session this node's record holds, when it claims
		// it again from the node it came from.
		var again *broker.SessionSnapshot
		if r.Node == n.cfg.Node {
			if took := n.takingOver(clientID); took != nil && !n.b.HasSession(clientID) {
				// This node is taking the session over from its lost
				// node (takeOver): the record names it, and the session,
				// with what the lost node mirrored, is about to be
				// installed. Recovered here as if this node had lost its
				// store, it would be installed without those.
				if f := takeOverWaitHook.Load(); f != nil {
					(*f)(clientID)
				}
				select {
				case <-took:
				case <-ctx.Done():
					return fail(ctx.Err())
				}
				continue
			}
			held := n.b.HasSession(clientID)
			if !held && (r.From == "" || r.From == n.cfg.Node) {
				// Named here but not held. The read may be stale: a
				// replica behind the bucket's leader (this node's own,
				// back from a partition) still names this node while
				// another took the session over and holds it. Going
				// ahead on it put the session on two nodes, each
				// delivering. Confirmed first by rewriting the record
				// unchanged at the revision read, as the fence's
				// re-check does: any claim or takeover since makes it
				// fail, and the record is read again.
				persistent := r.Session != nil && r.Session.Session.ExpiryInterval > 0
				if persistent && !clean {
					// From the write on, what is published here for it
					// is stashed until it is installed (arrive.go).
					n.arrive(clientID, snapshotFilters(r.Session))
				}
				rev, err := n.sessions.Update(ctx, k, e.Value(), e.Revision())
				if isRevisionMismatch(err) {
					lost, refused = true, e.Revision()
					continue
				}
				if err != nil {
					return fail(err)
				}
				n.noteOwner(k, rev, r)
				if persistent {
					claimed = true
					// Ours, persistent, recorded, but not held: this
					// node lost its store (restarted with its data
					// folder wiped) before anyone took the session
					// over. Recovered from the record and the stream
					// as a lost owner's would be, rather than started
					// empty (its subscriptions gone, what was relayed
					// for it delivered to no one).
					return n.recoverOwn(clientID, r.Session, clean)
				}
				return ok()
			}
			if held {
				return ok() // ours already: a local takeover, if any
			}
			// An earlier claim of ours wrote this and seemed to fail
			// (its answer was lost), so nothing was installed: the
			// session is still where it came from, or recoverable from
			// the record if that node is gone.
			n.log.Info("cluster: the record names this node but it holds no session; claiming it again", "client_id", clientID, "from", r.From)
			again = r.Session
			r.Node = r.From
		}
		if r.Node != "" && r.Node != asked {
			if in != nil {
				// Another node took the session from the owner we
				// asked, first: ask that one instead.
				n.abortIncoming(in)
				in = nil
			}
			orphan, orphanOf = nil, ""
			asked = r.Node
			got, err := n.askHandOver(r.Node, clientID, clean)
			switch {
			case err == nil && got.snap == nil && again != nil && again.Session.ExpiryInterval > 0:
				// The node it came from let it go (to this node, whose
				// store was lost since, with the record's rewrite not
				// landed): the session is this node's, recorded but not
				// held. Recovered from the record and this node's part
				// of the stream, as below, rather than started empty
				// (its subscriptions gone, what was relayed for it
				// delivered to no one). Confirmed first by rewriting the
				// record unchanged at the revision read.
				if !clean {
					n.arrive(clientID, snapshotFilters(again))
				}
				rev, err := n.sessions.Update(ctx, k, e.Value(), e.Revision())
				if isRevisionMismatch(err) {
					lost, refused = true, e.Revision()
					continue
				}
				if err != nil {
					return fail(err)
				}
				n.noteOwner(k, rev, record{Node: n.cfg.Node, Session: again, From: r.Node})
				claimed = true
				return n.recoverOwn(clientID, again, clean)
			case err == nil:
				in = got
				if in.snap != nil {
					// Before the compare-and-set below makes this node
					// the owner: from then on nothing published here is
					// forwarded to the old owner for it (arrive.go).
					n.arrive(clientID, snapshotFilters(in.snap))
				}
				// The transfer may have taken a while: the
				// compare-and-set gets its own time.
				cancel()
				ctx, cancel = n.claimContext()
			case errors.Is(err, broker.ErrSessionMoving):
				return nil, fmt.Errorf("claim %q from %s: %w", clientID, r.Node, err)
			case r.Session != nil:
				// The owner is gone: recover what it recorded (its
				// subscriptions, and the will its loss should publish).
				n.log.Warn("cluster: session owner unreachable; recovering its record", "client_id", clientID, "owner", r.Node, "err", err)
				s, qerr := n.withQueued(r.Session, r.Node, clean)
				if qerr != nil {
					// Refused, so that the client retries once the
					// stream is readable, rather than start without them.
					return nil, fmt.Errorf("%w: claim %q: recover queued messages: %v", errHandOver, clientID, qerr)
				}
				orphan, orphanOf = s, r.Node
				if !clean {
					n.arrive(clientID, snapshotFilters(s))
				}
				if f := recoveredHook.Load(); f != nil {
					(*f)(clientID)
				}
			}
		}
		// Where it came from, and what it had, go in the record until
		// this node records the session itself.
		claimed := record{Node: n.cfg.Node, From: r.Node, Session: r.Session}
		var rev uint64
		if rev, err = n.updateClaim(ctx, k, claimed, e.Revision()); err == nil {
			n.noteOwner(k, rev, record{Node: n.cfg.Node})
			return ok()
		}
		lost, refused = true, e.Revision()
		if !isRevisionMismatch(err) {
			if orphan != nil {
				// Going ahead would leave the record naming the lost
				// node, whose taker would adopt the session too: refused,
				// so that the client retries once the bucket answers.
				return nil, fmt.Errorf("%w: claim %q: record the recovered session: %v", errHandOver, clientID, err)
			}
			return fail(err)
		}
	}
	return fail(errors.New("contended"))
}

// connectHold bounds how long a CONNECT waits for this node to be able to
// serve before it is refused. Changed by tests.
var connectHold atomic.Int64

func init() { connectHold.Store(int64(readyWait)) }

// awaitServing waits, up to connectHold, until the node can serve clients:
// its replicated state is set up and it is part of the majority of its
// cluster. Otherwise the error wraps broker.ErrNotReady.
func (n *Node) awaitServing() error {
	deadline := time.NewTimer(time.Duration(connectHold.Load()))
	defer deadline.Stop()
	select {
	case <-n.ready:
	case <-deadline.C:
		return fmt.Errorf("cluster: replicated state not set up yet: %w", broker.ErrNotReady)
	}
	for !n.serving() {
		select {
		case <-deadline.C:
			return fmt.Errorf("cluster: fewer than a majority of the nodes reachable: %w", broker.ErrNotReady)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return nil
}

// claimWriteFault, set by tests, fails a claim's write after it landed,
// as when the bucket's answer is lost.
var claimWriteFault atomic.Pointer[func() error]

// updateClaim writes a claim's record with a compare-and-set.
func (n *Node) updateClaim(ctx context.Context, k string, r record, rev uint64) (uint64, error) {
	rev, err := n.sessions.Update(ctx, k, mustJSON(r), rev)
	if f := claimWriteFault.Load(); f != nil && err == nil {
		err = (*f)()
	}
	return rev, err
}

// replicaReadFault, set by tests, replaces the record a claim or a
// confirmation of ownership (readRecord) reads from this node's replica,
// as a replica behind the bucket's leader would answer with an older one.
var replicaReadFault atomic.Pointer[func(clientID string, e jetstream.KeyValueEntry) jetstream.KeyValueEntry]

// claimContext bounds a claim's bucket operations.
func (n *Node) claimContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(n.ctx, readyWait)
}

// askHandOver asks owner for clientID's session and fetches its state. An
// error that wraps broker.ErrSessionMoving means the owner answered (it is
// alive and keeps the session); any other, that it did not.
func (n *Node) askHandOver(owner, clientID string, clean bool) (*incoming, error) {
	msg, err := n.pc.Request(claimPrefix+key(owner), mustJSON(claimRequest{ClientID: clientID, Clean: clean, Node: n.cfg.Node}), claimTimeout)
	if err != nil {
		return nil, err
	}
	var rep claimReply
	if err := json.Unmarshal(msg.Data, &rep); err != nil {
		return nil, fmt.Errorf("%w: reply from %s: %v", errHandOver, owner, err)
	}
	in := &incoming{owner: owner, xfer: rep.Xfer}
	if rep.Xfer == "" {
		return in, nil
	}
	if err := n.fetch(owner, &rep, &in.snap); err != nil || in.snap == nil {
		n.abortIncoming(in)
		return nil, fmt.Errorf("%w: from %s: %v", errHandOver, owner, err)
	}
	return in, nil
}

// fetch reads what rep announces (inline or in chunks) into v.
func (n *Node) fetch(owner string, rep *claimReply, v any) error {
	data := []byte(rep.Inline)
	if data == nil {
		if rep.Size < 0 || rep.Chunks <= 0 || rep.Chunks > rep.Size/1024+1 {
			return fmt.Errorf("bad transfer size %d in %d chunks", rep.Size, rep.Chunks)
		}
		data = make([]byte, 0, rep.Size)
		for i := range rep.Chunks {
			chunk, err := n.fetchChunk(owner, rep.Xfer, i)
			if err != nil {
				return err
			}
			data = append(data, chunk...)
		}
	}
	if len(data) != rep.Size || crc32.ChecksumIEEE(data) != rep.CRC {
		return fmt.Errorf("state damaged in transfer: %d bytes of %d", len(data), rep.Size)
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("decode state: %w", err)
	}
	return nil
}

// committedHook, set by tests, runs on the old node once a session has
// left it, before the new node hears so.
var committedHook atomic.Pointer[func(clientID string)]

// claimedHook, set by tests, runs on a claiming node once the record
// names it and the old owner let the session go, before the session is
// installed here.
var claimedHook atomic.Pointer[func(clientID string)]

// fetchFault, set by tests, makes fetching a chunk fail.
var fetchFault atomic.Pointer[func(chunk int) error]

// fetchChunk asks owner for one chunk of a transfer, a few times.
func (n *Node) fetchChunk(owner, xfer string, i int) ([]byte, error) {
	if f := fetchFault.Load(); f != nil {
		if err := (*f)(i); err != nil {
			return nil, err
		}
	}
	msg, err := n.xferRequest(owner, xferRequest{ID: xfer, Op: "get", Chunk: i})
	if err != nil {
		return nil, fmt.Errorf("chunk %d: %w", i, err)
	}
	return msg.Data, nil
}

// commitIncoming tells the owner that this node took the session, and
// appends to it what the owner queued for it during the transfer. A lost
// answer is settled by the owner: when it hears nothing, it reads the
// sessions bucket (and the messages it queued meanwhile are lost).
func (n *Node) commitIncoming(in *incoming) {
	if in.xfer == "" {
		return
	}
	msg, err := n.xferRequest(in.owner, xferRequest{ID: in.xfer, Op: "commit"})
	if err != nil {
		n.log.Warn("cluster: hand-over confirmation not delivered; the owner will read the bucket", "owner", in.owner, "err", err)
		return
	}
	// Once the tail is here, the owner may forget its answer (a stopping
	// owner waits for this). Fire and forget: a node that does not know
	// the op ignores it.
	defer n.pc.Publish(xferPrefix+key(in.owner), mustJSON(xferRequest{ID: in.xfer, Op: "done"}))
	var rep claimReply
	if len(msg.Data) == 0 || json.Unmarshal(msg.Data, &rep) != nil {
		return
	}
	var tail []broker.SnapshotDelivery
	if rep.Xfer == "" && rep.Inline == nil {
		return
	}
	err = n.fetch(in.owner, &rep, &tail)
	if rep.Xfer != "" {
		n.xferRequest(in.owner, xferRequest{ID: rep.Xfer, Op: "abort"}) // frees it
	}
	if err != nil {
		n.log.Warn("cluster: messages queued during the hand-over lost", "owner", in.owner, "err", err)
		return
	}
	in.snap.Out = append(in.snap.Out, tail...)
}

// abortIncoming tells the owner to keep the session; if the message is
// lost, the owner keeps it anyway once it has heard nothing for a while.
func (n *Node) abortIncoming(in *incoming) {
	if in.xfer == "" {
		return
	}
	if _, err := n.xferRequest(in.owner, xferRequest{ID: in.xfer, Op: "abort"}); err != nil {
		n.log.Warn("cluster: hand-over abort not delivered; the owner will read the bucket", "owner", in.owner, "err", err)
	}
}

// xferRequest sends a transfer request, a few times if unanswered.
func (n *Node) xferRequest(owner string, req xferRequest) (*nats.Msg, error) {
	data := mustJSON(req)
	var err error
	for range chunkTries {
		var msg *nats.Msg
		if msg, err = n.pc.Request(xferPrefix+key(owner), data, claimTimeout); err != nil {
			continue
		}
		if e := msg.Header.Get(errHeader); e != "" {
			return nil, errors.New(e)
		}
		return msg, nil
	}
	return nil, err
}

// recoveredHook, set by tests, runs on a claiming node once it has read
// an unreachable owner's record and queued messages, before it records
// the claim.
var recoveredHook atomic.Pointer[func(clientID string)]

// claimMuted, set by tests, names a node that leaves hand-over requests
// unanswered, as one whose connection is closing.
var claimMuted atomic.Pointer[string]

// serveClaim answers another node's hand-over request: the session is
// prepared (its connection closed) and kept until the other node confirms.
func (n *Node) serveClaim(msg *nats.Msg) {
	var req claimRequest
	if err := json.Unmarshal(msg.Data, &req); err != nil || req.ClientID == "" {
		return
	}
	if m := claimMuted.Load(); m != nil && *m == n.cfg.Node {
		return
	}
	h := n.b.PrepareHandOver(req.ClientID, req.Clean)
	if h.Snapshot == nil {
		if err := msg.Respond(mustJSON(claimReply{})); err != nil {
			n.log.Warn("cluster: answer hand-over request", "client_id", req.ClientID, "err", err)
		}
		return
	}
	rep := n.offer(req.ClientID, req.Node, h, mustJSON(h.Snapshot), false)
	if err := msg.Respond(mustJSON(rep)); err != nil {
		n.log.Warn("cluster: answer hand-over request; keeping the session", "client_id", req.ClientID, "err", err)
		n.finishOutgoing(rep.Xfer, false)
	}
}

// offer keeps data for another node to fetch and describes it; small data
// goes inline. A session's state (h set) waits for commit or abort; other
// data (inline, nothing to wait for) is kept only if it needs fetching.
func (n *Node) offer(clientID, to string, h *broker.HandOff, data []byte, inlineOnly bool) claimReply {
	var id [12]byte
	rand.Read(id[:])
	rep := claimReply{Xfer: hex.EncodeToString(id[:]), Size: len(data), Chunks: (len(data) + n.chunk - 1) / n.chunk, CRC: crc32.ChecksumIEEE(data)}
	if len(data) <= n.chunk {
		rep.Inline = data
		if inlineOnly {
			rep.Xfer = ""
			return rep
		}
	}
	o := &outgoing{clientID: clientID, to: to, h: h, data: data}
	n.xfersMu.Lock()
	n.xfers[rep.Xfer] = o
	o.timer = time.AfterFunc(xferIdle, func() { n.expireOutgoing(rep.Xfer) })
	n.xfersMu.Unlock()
	return rep
}

// serveTransfer serves the chunks of a prepared session and its outcome.
func (n *Node) serveTransfer(msg *nats.Msg) {
	var req xferRequest
	if err := json.Unmarshal(msg.Data, &req); err != nil {
		return
	}
	switch req.Op {
	case "get":
		n.xfersMu.Lock()
		o := n.xfers[req.ID]
		if o != nil {
			o.timer.Reset(xferIdle)
		}
		n.xfersMu.Unlock()
		if o == nil || req.Chunk < 0 || req.Chunk*n.chunk >= len(o.data) {
			respondErr(msg, "no such transfer or chunk")
			return
		}
		from := req.Chunk * n.chunk
		msg.Respond(o.data[from:min(from+n.chunk, len(o.data))])
	case "commit", "abort":
		tail, ok := n.finishOutgoing(req.ID, req.Op == "commit")
		if !ok {
			if reply, ok := n.committedReply(req.ID); ok && req.Op == "commit" {
				// A retried commit whose first answer was lost: the same
				// answer, or the tail it carried would be lost.
				n.respondCommit(msg, req.ID, reply)
				return
			}
			respondErr(msg, "no such transfer (timed out)")
			return
		}
		var reply []byte
		if len(tail) > 0 {
			// Queued for the session while it moved: the new node
			// appends them, fetching them in chunks if need be.
			reply = mustJSON(n.offer("", "", nil, mustJSON(tail), true))
		}
		if req.Op == "commit" {
			n.keepCommitted(req.ID, reply)
		}
		n.respondCommit(msg, req.ID, reply)
	case "done":
		// The new node has the commit's answer (and the tail it named).
		n.xfersMu.Lock()
		if c := n.committed[req.ID]; c != nil {
			c.timer.Stop()
			delete(n.committed, req.ID)
		}
		n.xfersMu.Unlock()
	}
}

// commitReplyFault, set by tests, loses the answer to a commit (true), as
// when the connection carrying it closes.
var commitReplyFault atomic.Pointer[func(xfer string) bool]

func (n *Node) respondCommit(msg *nats.Msg, id string, reply []byte) {
	if f := commitReplyFault.Load(); f != nil && (*f)(id) {
		return
	}
	msg.Respond(reply)
}

// committedXfer is a commit's answer, kept until the new node says it has
// it ("done") or for xferIdle: a commit retried because its answer was
// lost gets it again, rather than "no such transfer" and the loss of the
// messages queued during the move. A stopping node waits for these too
// (awaitTransfers): its answer must leave before it does.
type committedXfer struct {
	reply []byte
	timer *time.Timer
}

func (n *Node) keepCommitted(id string, reply []byte) {
	n.xfersMu.Lock()
	defer n.xfersMu.Unlock()
	if n.committed == nil {
		n.committed = make(map[string]*committedXfer)
	}
	n.committed[id] = &committedXfer{reply: reply, timer: time.AfterFunc(xferIdle, func() {
		n.xfersMu.Lock()
		delete(n.committed, id)
		n.xfersMu.Unlock()
	})}
}

func (n *Node) committedReply(id string) ([]byte, bool) {
	n.xfersMu.Lock()
	defer n.xfersMu.Unlock()
	c := n.committed[id]
	if c == nil {
		return nil, false
	}
	return c.reply, true
}

func respondErr(msg *nats.Msg, e string) {
	r := nats.NewMsg(msg.Reply)
	r.Header.Set(errHeader, e)
	msg.RespondMsg(r)
}

// finishOutgoing ends a transfer: on commit the session leaves this node
// (what was queued for it since its state was taken is returned), on
// abort it stays. ok reports whether the transfer was still open.
func (n *Node) finishOutgoing(id string, commit bool) (tail []broker.SnapshotDelivery, ok bool) {
	n.xfersMu.Lock()
	o := n.xfers[id]
	delete(n.xfers, id)
	n.xfersMu.Unlock()
	if o == nil {
		return nil, false
	}
	o.timer.Stop()
	switch {
	case o.h == nil: // data other than a session's state
	case commit:
		tail = n.b.CommitHandOver(o.h, func() { n.noteMoved(o.clientID, o.to, o.h.Snapshot) })
		if f := committedHook.Load(); f != nil {
			(*f)(o.clientID)
		}
	default:
		n.b.AbortHandOver(o.h)
	}
	return tail, true
}

// expireOutgoing settles a transfer the other node went quiet on: if it
// took ownership in the bucket, it has the state, and this copy goes;
// otherwise (or if the bucket cannot say) the session stays here.
func (n *Node) expireOutgoing(id string) {
	n.xfersMu.Lock()
	o := n.xfers[id]
	n.xfersMu.Unlock()
	if o == nil {
		return
	}
	if o.h == nil {
		n.finishOutgoing(id, false)
		return
	}
	select {
	case <-n.ready:
	default:
		n.finishOutgoing(id, false) // no bucket to ask: keep the session
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, kvTimeout)
	defer cancel()
	commit := false
	if e, err := n.sessions.Get(ctx, key(o.clientID)); err == nil {
		var r record
		commit = json.Unmarshal(e.Value(), &r) == nil && r.Node != "" && r.Node != n.cfg.Node
		if commit {
			n.xfersMu.Lock()
			o.to = r.Node
			n.xfersMu.Unlock()
		}
	}
	n.log.Warn("cluster: hand-over not confirmed in time", "client_id", o.clientID, "taken", commit)
	n.finishOutgoing(id, commit)
}

// snapshotFilters lists the filters of a session's subscriptions whose
// messages are promised (QoS 1 or 2).
func snapshotFilters(s *broker.SessionSnapshot) []string {
	var out []string
	for _, sub := range s.Subs {
		if sub.Options.QoS > 0 {
			out = append(out, sub.Filter)
		}
	}
	return out
}
