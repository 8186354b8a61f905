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

// Claim makes this node the owner of clientID's session. If another node
// owns it, that node hands it over (closing its connection); if that node
// is gone, the subscriptions it last recorded are recovered. An error that
// wraps broker.ErrSessionMoving means the owner kept the session and the
// connect should be refused; other errors mean the replicated state is
// unavailable.
func (n *Node) Claim(clientID string, clean bool) (*broker.SessionSnapshot, error) {
	select {
	case <-n.ready:
	case <-time.After(readyWait):
		return nil, errors.New("cluster: replicated state not ready")
	}
	// Bounded well inside the connect timeout: without a quorum the
	// connect goes ahead on this node's state.
	ctx, cancel := n.claimContext()
	defer func() { cancel() }()
	k := key(clientID)
	mine := mustJSON(record{Node: n.cfg.Node})
	var in *incoming
	claimed := false
	defer func() {
		if in != nil {
			n.finishIncoming(in, claimed)
		}
	}()
	// fail reports a failed claim; with a transfer under way, the owner
	// keeps the session and the connect must wait for another attempt.
	fail := func(err error) (*broker.SessionSnapshot, error) {
		if in != nil && in.xfer != "" {
			return nil, fmt.Errorf("%w: claim %q: %v", errHandOver, clientID, err)
		}
		return nil, fmt.Errorf("cluster: claim %q: %w", clientID, err)
	}
	ok := func() (*broker.SessionSnapshot, error) {
		claimed = true
		if in == nil {
			return nil, nil
		}
		return in.snap, nil
	}
	asked := false
	for attempt := 0; attempt < 8; attempt++ {
		e, err := n.sessions.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			if _, err = n.sessions.Create(ctx, k, mine); err == nil {
				return ok()
			}
			if errors.Is(err, jetstream.ErrKeyExists) {
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
		if r.Node == n.cfg.Node {
			return ok() // ours already: a local takeover, if any
		}
		if !asked && r.Node != "" {
			asked = true
			got, err := n.askHandOver(r.Node, clientID, clean)
			switch {
			case err == nil:
				in = got
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
				n.b.AdoptOrphan(r.Session, true, clean)
			}
		}
		if _, err = n.sessions.Update(ctx, k, mine, e.Revision()); err == nil {
			return ok()
		}
		if !errors.Is(err, jetstream.ErrKeyExists) && !isRevisionMismatch(err) {
			return fail(err)
		}
	}
	return fail(errors.New("contended"))
}

// claimContext bounds a claim's bucket operations.
func (n *Node) claimContext() (context.Context, context.CancelFunc) {
	return context.WithTimeout(n.ctx, readyWait)
}

// askHandOver asks owner for clientID's session and fetches its state. An
// error that wraps broker.ErrSessionMoving means the owner answered (it is
// alive and keeps the session); any other, that it did not.
func (n *Node) askHandOver(owner, clientID string, clean bool) (*incoming, error) {
	msg, err := n.pc.Request(claimPrefix+key(owner), mustJSON(claimRequest{ClientID: clientID, Clean: clean}), claimTimeout)
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
	fail := func(err error) (*incoming, error) {
		n.finishIncoming(in, false)
		return nil, fmt.Errorf("%w: from %s: %v", errHandOver, owner, err)
	}
	data := []byte(rep.Inline)
	if data == nil {
		if rep.Size < 0 || rep.Chunks <= 0 || rep.Chunks > rep.Size/1024+1 {
			return fail(fmt.Errorf("bad transfer size %d in %d chunks", rep.Size, rep.Chunks))
		}
		data = make([]byte, 0, rep.Size)
		for i := range rep.Chunks {
			chunk, err := n.fetchChunk(owner, rep.Xfer, i)
			if err != nil {
				return fail(err)
			}
			data = append(data, chunk...)
		}
	}
	if len(data) != rep.Size || crc32.ChecksumIEEE(data) != rep.CRC {
		return fail(fmt.Errorf("state damaged in transfer: %d bytes of %d", len(data), rep.Size))
	}
	if err := json.Unmarshal(data, &in.snap); err != nil || in.snap == nil {
		return fail(fmt.Errorf("decode state: %v", err))
	}
	return in, nil
}

// fetchFault, set by tests, makes fetching a chunk fail.
var fetchFault atomic.Pointer[func(chunk int) error]

// fetchChunk asks owner for one chunk of a transfer, a few times.
func (n *Node) fetchChunk(owner, xfer string, i int) ([]byte, error) {
	if f := fetchFault.Load(); f != nil {
		if err := (*f)(i); err != nil {
			return nil, err
		}
	}
	req := mustJSON(xferRequest{ID: xfer, Op: "get", Chunk: i})
	var err error
	for range chunkTries {
		var msg *nats.Msg
		if msg, err = n.pc.Request(xferPrefix+key(owner), req, claimTimeout); err != nil {
			continue
		}
		if e := msg.Header.Get(errHeader); e != "" {
			return nil, fmt.Errorf("chunk %d: %s", i, e) // the owner gave up on it
		}
		return msg.Data, nil
	}
	return nil, fmt.Errorf("chunk %d: %w", i, err)
}

// finishIncoming tells the owner whether this node took the session. A
// lost answer is settled by the owner: when it hears nothing, it reads the
// sessions bucket.
func (n *Node) finishIncoming(in *incoming, commit bool) {
	if in.xfer == "" {
		return
	}
	op := "abort"
	if commit {
		op = "commit"
	}
	req := mustJSON(xferRequest{ID: in.xfer, Op: op})
	for try := range chunkTries {
		msg, err := n.pc.Request(xferPrefix+key(in.owner), req, claimTimeout)
		if err == nil {
			if e := msg.Header.Get(errHeader); e != "" {
				n.log.Warn("cluster: hand-over outcome not taken", "owner", in.owner, "op", op, "err", e)
			}
			return
		}
		if try == chunkTries-1 {
			n.log.Warn("cluster: hand-over outcome not delivered; the owner will read the bucket", "owner", in.owner, "op", op, "err", err)
		}
	}
}

// serveClaim answers another node's hand-over request: the session is
// prepared (its connection closed) and kept until the other node confirms.
func (n *Node) serveClaim(msg *nats.Msg) {
	var req claimRequest
	if err := json.Unmarshal(msg.Data, &req); err != nil || req.ClientID == "" {
		return
	}
	h := n.b.PrepareHandOver(req.ClientID, req.Clean)
	if h.Snapshot == nil {
		if err := msg.Respond(mustJSON(claimReply{})); err != nil {
			n.log.Warn("cluster: answer hand-over request", "client_id", req.ClientID, "err", err)
		}
		return
	}
	data := mustJSON(h.Snapshot)
	var id [12]byte
	rand.Read(id[:])
	o := &outgoing{clientID: req.ClientID, h: h, data: data}
	rep := claimReply{Xfer: hex.EncodeToString(id[:]), Size: len(data), Chunks: (len(data) + n.chunk - 1) / n.chunk, CRC: crc32.ChecksumIEEE(data)}
	if len(data) <= n.chunk {
		rep.Inline = data
	}
	n.xmu.Lock()
	n.xfers[rep.Xfer] = o
	o.timer = time.AfterFunc(xferIdle, func() { n.expireOutgoing(rep.Xfer) })
	n.xmu.Unlock()
	if err := msg.Respond(mustJSON(rep)); err != nil {
		n.log.Warn("cluster: answer hand-over request; keeping the session", "client_id", req.ClientID, "err", err)
		n.finishOutgoing(rep.Xfer, false)
	}
}

// serveTransfer serves the chunks of a prepared session and its outcome.
func (n *Node) serveTransfer(msg *nats.Msg) {
	var req xferRequest
	if err := json.Unmarshal(msg.Data, &req); err != nil {
		return
	}
	switch req.Op {
	case "get":
		n.xmu.Lock()
		o := n.xfers[req.ID]
		if o != nil {
			o.timer.Reset(xferIdle)
		}
		n.xmu.Unlock()
		if o == nil || req.Chunk < 0 || req.Chunk*n.chunk >= len(o.data) {
			respondErr(msg, "no such transfer or chunk")
			return
		}
		from := req.Chunk * n.chunk
		msg.Respond(o.data[from:min(from+n.chunk, len(o.data))])
	case "commit", "abort":
		if !n.finishOutgoing(req.ID, req.Op == "commit") {
			respondErr(msg, "no such transfer (timed out)")
			return
		}
		msg.Respond(nil)
	}
}

func respondErr(msg *nats.Msg, e string) {
	r := nats.NewMsg(msg.Reply)
	r.Header.Set(errHeader, e)
	msg.RespondMsg(r)
}

// finishOutgoing ends a transfer: on commit the session leaves this node,
// on abort it stays. It reports whether the transfer was still open.
func (n *Node) finishOutgoing(id string, commit bool) bool {
	n.xmu.Lock()
	o := n.xfers[id]
	delete(n.xfers, id)
	n.xmu.Unlock()
	if o == nil {
		return false
	}
	o.timer.Stop()
	if commit {
		n.b.CommitHandOver(o.h)
	} else {
		n.b.AbortHandOver(o.h)
	}
	return true
}

// expireOutgoing settles a transfer the other node went quiet on: if it
// took ownership in the bucket, it has the state, and this copy goes;
// otherwise (or if the bucket cannot say) the session stays here.
func (n *Node) expireOutgoing(id string) {
	n.xmu.Lock()
	o := n.xfers[id]
	n.xmu.Unlock()
	if o == nil {
		return
	}
	ctx, cancel := context.WithTimeout(n.ctx, kvTimeout)
	defer cancel()
	commit := false
	if e, err := n.sessions.Get(ctx, key(o.clientID)); err == nil {
		var r record
		commit = json.Unmarshal(e.Value(), &r) == nil && r.Node != "" && r.Node != n.cfg.Node
	}
	n.log.Warn("cluster: hand-over not confirmed in time", "client_id", o.clientID, "taken", commit)
	n.finishOutgoing(id, commit)
}
