package cluster

// Messages for persistent sessions on other nodes. Core NATS carries a
// message between nodes at most once, which is not enough for a QoS 1/2
// message that a persistent session on another node must get: its
// publisher's acknowledgement promises it is kept. So for such a message
// (the sessions bucket says which nodes own persistent sessions whose
// subscriptions match) the publishing node asks those nodes to confirm
// they have stored, and replicated, their deliveries, and holds the
// acknowledgement until they have. A node that does not confirm in time
// (it died, fell behind, or is cut off) gets the message through the relay
// stream instead: a replicated work queue with one subject per node,
// consumed by that node or, while it is lost, by the node that took its
// sessions over.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/starling-mqtt/starling/internal/session"
	"github.com/starling-mqtt/starling/internal/topic"
)

const (
	relayStream   = "starling_relay"
	relayPrefix   = "stl.r."
	confirmPrefix = "stl.ok."
	// confirmWait is how long a publish waits for the nodes owning its
	// persistent subscribers to confirm before relaying it to them
	// through the stream; above the owner's own wait for its queue
	// stream (mirrorWait), so a slow but live owner seldom gets it twice.
	confirmWait = 2500 * time.Millisecond
	// relayRetry delays a relayed message whose session's node is lost
	// and not yet taken over.
	relayRetry = 2 * time.Second
	// relayAckWait is when a relayed message handed to a node that did
	// not acknowledge it (it died) goes to the next node asking; the
	// handler marks a message in progress before each slow step.
	relayAckWait = 10 * time.Second
	// relayUnheld bounds the tries (relayRetry apart) of a relayed
	// message for a session the sessions bucket says this node owns but
	// that it does not hold.
	relayUnheld = 30
	// maxSpills bounds the relay writes in progress.
	maxSpills = 1024

	hdrConfirm = "Stl-Confirm" // nodes asked to confirm a message
	hdrFor     = "Stl-For"     // "<index in Stl-Confirm>.<key(client ID)>": the sessions a node confirms for
	hdrTargets = "Stl-Targets" // client IDs a relayed message is for

	// maxForBytes bounds the Stl-For list on a forwarded message; past it
	// a node confirms for whatever it holds (a fan-out to thousands of
	// persistent sessions keeps its messages small).
	maxForBytes = 16 << 10
	// relayTargets bounds the client IDs of one relay stream message,
	// and relayTargetBytes their header's size (client IDs may be long:
	// the embedded server leaves 64 KiB beside the largest message).
	relayTargets     = 256
	relayTargetBytes = 16 << 10
)

// spillWarn: a write to the relay stream still retried after this long
// (the stream without a leader or quorum) is logged and counted. It is
// retried until it lands or the node stops: the publisher's
// acknowledgement, and everything after it on that connection, waits
// meanwhile, since acknowledging a message no node has would break the
// promise; a publisher that gives up and resends is served again. A
// variable for tests.
var spillWarn = 10 * time.Second

// relay is the node's side of confirmed forwarding.
type relay struct {
	subs *topic.Index[string] // other nodes' persistent sessions' subscriptions -> their node, from the sessions bucket
	js   atomic.Pointer[jetstream.JetStream]
	self string // this node's confirmation subject

	mu   sync.Mutex
	pend map[uint64]*forwarded // by sequence number

	// known is closed once the sessions bucket has been read through:
	// before, a session missing from owners may just not be read yet.
	known     chan struct{}
	knownOnce sync.Once

	down atomic.Pointer[map[string]bool] // nodes seen since the start, without routes now
	sem  chan struct{}

	consumersMu sync.Mutex
	consumers   map[string]context.CancelFunc // relay subjects consumed, by node

	relayed, failed atomic.Uint64
}

// forwarded is a message waiting for nodes to confirm it.
type forwarded struct {
	id      string              // stream deduplication ID, per node appended
	data    []byte              // the encoded message
	targets map[string][]string // node -> client IDs there
	need    map[string]bool     // nodes yet to confirm -> being relayed
	// held are the nodes that have it but wait for room to confirm it
	// (flow.go), with when they last said so.
	held map[string]time.Time
	at   time.Time
	done chan struct{}
}

func (r *relay) init(instance uint64) {
	r.subs = topic.NewIndex[string]()
	r.pend = make(map[uint64]*forwarded)
	r.sem = make(chan struct{}, maxSpills)
	r.consumers = make(map[string]context.CancelFunc)
	r.known = make(chan struct{})
	r.self = fmt.Sprintf("%s%016x", confirmPrefix, instance)
}

// indexSession follows one sessions-bucket entry: the subscriptions of a
// persistent session owned by another node are what Forward asks
// confirmation for. rec nil: the entry was deleted.
func (n *Node) indexSession(k string, rec *record) {
	id, err := unkey(k)
	if err != nil {
		return
	}
	n.rel.subs.RemoveClient(id)
	if rec == nil || rec.Node == n.cfg.Node || rec.Session == nil || rec.Session.Session.ExpiryInterval == 0 {
		return
	}
	for _, s := range rec.Session.Subs {
		if s.Options.QoS == 0 {
			continue // its messages arrive at QoS 0: nothing is promised
		}
		if _, _, shared := topic.ParseShared(s.Filter); shared {
			continue // a $share group's member is picked by NATS, not known here
		}
		if topic.ValidateFilter(s.Filter) == nil {
			n.rel.subs.Add(id, "", s.Filter, rec.Node)
		}
	}
}

// persistentTargets lists, by node, the other nodes' persistent sessions
// that m must reach.
func (n *Node) persistentTargets(m *session.Message) map[string][]string {
	es := n.rel.subs.Match(m.Topic, nil)
	if len(es) == 0 {
		return nil
	}
	out := make(map[string][]string)
	seen := make(map[string]bool, len(es))
	for _, e := range es {
		if !seen[e.Client] { // a session's node is the same for all its filters
			seen[e.Client] = true
			out[e.Value] = append(out[e.Value], e.Client)
		}
	}
	return out
}

// expect registers a forwarded message before it is published, so that
// no confirmation arrives unknown; nodes known to be down are relayed to
// at once. Called under the outbox's lock (batch.go).
func (n *Node) expect(seq uint64, data []byte, targets map[string][]string) *forwarded {
	f := &forwarded{id: fmt.Sprintf("s-%016x-%d", n.instance, seq), data: slices.Clone(data), targets: targets,
		need: make(map[string]bool, len(targets)), at: time.Now(), done: make(chan struct{})}
	down := n.downNodes()
	n.rel.mu.Lock()
	defer n.rel.mu.Unlock()
	n.rel.pend[seq] = f
	for node := range targets {
		f.need[node] = down[node]
		if down[node] {
			n.goSpill(seq, f, node)
		}
	}
	return f
}

// confirmed handles a node's confirmation: 8 bytes of sequence number,
// then the node's name; with the Stl-Held header, the node has the
// message but confirms it only once its sessions have room (flow.go).
func (n *Node) confirmed(msg *nats.Msg) {
	if len(msg.Data) < 8 {
		return
	}
	seq, node := binary.BigEndian.Uint64(msg.Data), string(msg.Data[8:])
	held := msg.Header.Get(hdrHeld) != ""
	n.rel.mu.Lock()
	defer n.rel.mu.Unlock()
	if f := n.rel.pend[seq]; f != nil {
		if relaying, ok := f.need[node]; ok && !relaying {
			if held {
				if f.held == nil {
					f.held = make(map[string]time.Time, 1)
				}
				f.held[node] = time.Now()
				return
			}
			delete(f.need, node)
			delete(f.held, node)
			n.settleLocked(seq, f)
		}
	}
}

func (n *Node) settleLocked(seq uint64, f *forwarded) {
	if len(f.need) == 0 {
		delete(n.rel.pend, seq)
		close(f.done)
	}
}

// confirmLoop relays what was not confirmed in time, and at once what
// waits for a node that has gone.
func (n *Node) confirmLoop() {
	defer n.wg.Done()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-n.ctx.Done():
			return
		case <-tick.C:
		}
		n.relayDue(time.Now(), n.downNodes(), false)
	}
}

// relayDue relays each waiting message to the nodes that have not
// confirmed it in time or are down; all: to every node yet to confirm.
func (n *Node) relayDue(now time.Time, down map[string]bool, all bool) {
	lapsed := 0
	defer func() {
		if lapsed > 0 && !all {
			n.log.Warn("cluster: nodes that held messages for full sessions stopped saying so; their publishers are let go",
				"messages", lapsed)
		}
	}()
	n.rel.mu.Lock()
	defer n.rel.mu.Unlock()
	for seq, f := range n.rel.pend {
		late := all || now.Sub(f.at) >= confirmWait
		settle := false
		for node, relaying := range f.need {
			if at, ok := f.held[node]; ok && !relaying {
				// It has the message, stored and replicated: nothing to
				// relay. The publisher waits for room there only while
				// that node says so.
				if all || down[node] || now.Sub(at) >= holdLapse {
					if !down[node] {
						lapsed++
					}
					delete(f.need, node)
					delete(f.held, node)
					settle = true
				}
				continue
			}
			if !relaying && (late || down[node]) {
				f.need[node] = true
				n.goSpill(seq, f, node)
			}
		}
		if settle {
			n.settleLocked(seq, f)
		}
	}
}

// goSpill runs spill; called under rel.mu.
func (n *Node) goSpill(seq uint64, f *forwarded, node string) {
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		n.spill(seq, f, node)
	}()
}

// spill writes a message to node's relay subject, retrying while the
// stream is unavailable, then lets the publisher's acknowledgement go.
func (n *Node) spill(seq uint64, f *forwarded, node string) {
	var err error
	select {
	case n.rel.sem <- struct{}{}:
		slow := time.AfterFunc(spillWarn, func() {
			n.rel.failed.Add(1)
			n.log.Error("cluster: the relay stream has not taken a message for persistent sessions on another node for 10 s; its publisher waits for its acknowledgement until it does",
				"to_node", node, "clients", len(f.targets[node]))
		})
		err = n.relayTo(node, f.data, f.targets[node], f.id+"-"+key(node), 0)
		slow.Stop()
		<-n.rel.sem
	case <-n.ctx.Done():
		err = n.ctx.Err()
	}
	switch {
	case err != nil && refusedForGood(err):
		// Too large to relay, ever: the publisher is let go rather than
		// held for good, and the sessions there miss it. Said loudly.
		n.rel.failed.Add(1)
		n.log.Error("cluster: the relay stream refused a message for persistent sessions on another node for good (too large); acknowledged without it",
			"to_node", node, "clients", len(f.targets[node]), "bytes", len(f.data), "err", err)
	case err != nil:
		// The node stops: its clients are gone already (BeginShutdown
		// comes first), so no acknowledgement goes out for it.
		n.log.Warn("cluster: stopping with a message for persistent sessions on another node not relayed; its publisher had no acknowledgement",
			"to_node", node, "clients", len(f.targets[node]), "err", err)
	default:
		n.rel.relayed.Add(1)
	}
	n.rel.mu.Lock()
	delete(f.need, node)
	n.settleLocked(seq, f)
	n.rel.mu.Unlock()
}

// relayTo writes a message for clients to node's relay subject, in
// stream messages of at most relayTargets clients (relayPart), retrying each for up
// to patience (0: until the node stops). The stream drops a repeat of
// msgID (suffixed per part).
func (n *Node) relayTo(node string, data []byte, clients []string, msgID string, patience time.Duration) error {
	var deadline time.Time
	if patience > 0 {
		deadline = time.Now().Add(patience)
	}
	js := n.rel.js.Load()
	for js == nil {
		if !deadline.IsZero() && time.Now().After(deadline) {
			return errors.New("relay stream not open yet")
		}
		select {
		case <-n.ctx.Done():
			return n.ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		js = n.rel.js.Load()
	}
	for part := 0; len(clients) > 0; part++ {
		some := relayPart(clients)
		clients = clients[len(some):]
		msg := nats.NewMsg(relayPrefix + key(node))
		msg.Data = data
		msg.Header[hdrTargets] = some
		msg.Header.Set(jetstream.MsgIDHeader, fmt.Sprintf("%s-%d", msgID, part))
		if err := n.publishRelay(*js, msg, deadline); err != nil {
			return err
		}
	}
	return nil
}

// relayPart is the first part of clients one relay stream message
// names: at most relayTargets of them and relayTargetBytes of header,
// and at least one.
func relayPart(clients []string) []string {
	n, size := 0, 0
	for n < len(clients) && n < relayTargets {
		size += len(clients[n]) + len(hdrTargets) + 4 // "Name: value\r\n"
		if n > 0 && size > relayTargetBytes {
			break
		}
		n++
	}
	return clients[:n]
}

// publishRelay writes msg, retrying until deadline (zero: until the node
// stops).
func (n *Node) publishRelay(js jetstream.JetStream, msg *nats.Msg, deadline time.Time) error {
	for delay := 100 * time.Millisecond; ; delay = min(2*delay, 2*time.Second) {
		wait := 5 * time.Second
		if !deadline.IsZero() {
			wait = min(wait, max(time.Until(deadline), 100*time.Millisecond))
		}
		ctx, cancel := context.WithTimeout(n.ctx, wait)
		_, err := js.PublishMsg(ctx, msg)
		cancel()
		if err == nil {
			return nil
		}
		if n.ctx.Err() != nil || refusedForGood(err) || (!deadline.IsZero() && time.Now().Add(delay).After(deadline)) {
			return err
		}
		select {
		case <-n.ctx.Done():
			return err
		case <-time.After(delay):
		}
	}
}

// refusedForGood reports whether a relay write failed in a way no retry
// mends (the message too large for the connection or the stream):
// retried until the node stops, it would hold its publisher, and one of
// the maxSpills slots, for good.
func refusedForGood(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, nats.ErrMaxPayload) ||
		errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamMessageExceedsMaximum
}

// confirmsFor reports whether this node may confirm msg: it was asked to
// and, where msg names the sessions it is for here, the sessions bucket
// still says this node owns each and the broker holds it (a session that
// moved on, or is still arriving, gets it through the relay stream
// instead). held lists those of them it holds (heldFor).
func (n *Node) confirmsFor(msg *nats.Msg) (confirm bool, held []heldSession) {
	held, all, asked := n.heldFor(msg)
	return asked && all && msg.Reply != "" && n.fenceGate() == nil && !n.stopping.Load(), held
}

// confirm tells the nodes that asked that this node has the messages
// (seqs[i] from replies[i]).
func (n *Node) confirm(replies []string, seqs []uint64) {
	for i, r := range replies {
		b := binary.BigEndian.AppendUint64(make([]byte, 0, 8+len(n.cfg.Node)), seqs[i])
		n.pc.Publish(r, append(b, n.cfg.Node...))
	}
}

// downNodes is the set of nodes seen since this one started that had no
// route as of watchPeers' last look (a second ago at most).
func (n *Node) downNodes() map[string]bool {
	if p := n.rel.down.Load(); p != nil {
		return *p
	}
	return nil
}

// setLive records the nodes with routes now (watchPeers, just after
// Peers has added them to those seen).
func (n *Node) setLive(peers []string) {
	down := make(map[string]bool)
	n.peersMu.Lock()
	for p := range n.seen {
		if !slices.Contains(peers, p) {
			down[p] = true
		}
	}
	n.peersMu.Unlock()
	n.rel.down.Store(&down)
}

// openRelay creates (or opens) the relay stream. A work queue: a relayed
// message is deleted once its node acknowledges it.
func (n *Node) openRelay(js jetstream.JetStream, replicas int) bool {
	if n.openStream(js, jetstream.StreamConfig{Name: relayStream, Subjects: []string{relayPrefix + ">"},
		Replicas: replicas, Storage: jetstream.FileStorage, Retention: jetstream.WorkQueuePolicy}) == nil {
		return false
	}
	n.rel.js.Store(&js)
	return true
}

// consumeRelay starts consuming node's relay subject, unless already.
func (n *Node) consumeRelay(node string) {
	n.rel.consumersMu.Lock()
	defer n.rel.consumersMu.Unlock()
	if _, ok := n.rel.consumers[node]; ok || n.ctx.Err() != nil || n.stopping.Load() {
		return
	}
	ctx, cancel := context.WithCancel(n.ctx)
	n.rel.consumers[node] = cancel
	n.wg.Add(1)
	go n.relayLoop(ctx, node)
}

// stopRelay stops consuming a lost node's relay subject: it is back.
func (n *Node) stopRelay(node string) {
	n.rel.consumersMu.Lock()
	defer n.rel.consumersMu.Unlock()
	if cancel, ok := n.rel.consumers[node]; ok && node != n.cfg.Node {
		cancel()
		delete(n.rel.consumers, node)
		n.log.Info("cluster: node back; its relayed messages are its own again", "peer", node)
	}
}

// relayLoop delivers the messages relayed to node: to the sessions this
// node owns, and on to the node that owns the others now.
func (n *Node) relayLoop(ctx context.Context, node string) {
	defer n.wg.Done()
	// Not before the sessions bucket is read through: a session not yet
	// read would look ended, and its messages be dropped.
	select {
	case <-n.rel.known:
	case <-ctx.Done():
		return
	}
	js := *n.rel.js.Load()
	var cons jetstream.Consumer
	// Targets of a message already delivered, while others of it wait.
	handled := make(map[uint64]map[string]bool)
	pause := func() bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(time.Second):
			return true
		}
	}
	for ctx.Err() == nil {
		if !n.waitServing(ctx) {
			return
		}
		if cons == nil {
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			var err error
			cons, err = js.CreateOrUpdateConsumer(c, relayStream, jetstream.ConsumerConfig{
				Durable: "relay-" + key(node), FilterSubject: relayPrefix + key(node),
				AckPolicy: jetstream.AckExplicitPolicy, AckWait: relayAckWait, MaxAckPending: 1024})
			cancel()
			if err != nil {
				n.log.Debug("cluster: waiting for the relay stream", "node", node, "err", err)
				if !pause() {
					return
				}
				continue
			}
		}
		// Short polls: a request left behind by a node that died takes
		// the messages arriving until it expires, and they wait out
		// relayAckWait before anyone gets them again.
		batch, err := cons.Fetch(32, jetstream.FetchMaxWait(250*time.Millisecond))
		if err == nil {
			// Not ranged over: a batch whose connection closed ends only
			// when the client's own timer for it fires, which held each
			// node's stop for more than a second.
			msgs := batch.Messages()
		batch:
			for {
				select {
				case <-ctx.Done():
					return // unacknowledged: redelivered to whoever consumes next
				case msg, ok := <-msgs:
					if !ok {
						break batch
					}
					if ctx.Err() != nil {
						return
					}
					n.relayOne(node, msg, handled)
				}
			}
			err = batch.Error()
		}
		if err != nil && !errors.Is(err, nats.ErrTimeout) && !errors.Is(err, context.DeadlineExceeded) {
			if errors.Is(err, jetstream.ErrConsumerNotFound) || errors.Is(err, jetstream.ErrConsumerDeleted) {
				cons = nil
			}
			n.log.Debug("cluster: relay stream fetch", "node", node, "err", err)
			if !pause() {
				return
			}
		}
	}
}

// relayOne delivers one relayed message, or asks for it again later while
// some of its sessions' node is lost and not yet taken over.
func (n *Node) relayOne(node string, msg jetstream.Msg, handled map[uint64]map[string]bool) {
	if n.fenceGate() != nil {
		msg.NakWithDelay(relayRetry) // which sessions are ours is being re-checked
		return
	}
	h, m, err := decodeMessage(msg.Data())
	if err != nil {
		n.log.Warn("cluster: dropping undecodable relayed message", "err", err)
		msg.Term()
		return
	}
	meta, err := msg.Metadata()
	if err != nil {
		msg.Term()
		return
	}
	sseq := meta.Sequence.Stream
	done := handled[sseq]
	down := n.downNodes()
	var here, later []string
	for _, id := range msg.Headers()[hdrTargets] {
		if done[id] {
			continue
		}
		owner, ok, err := n.ownerOf(id)
		switch {
		case err != nil:
			later = append(later, id)
			continue
		case !ok:
			// No record: the session has ended; nothing is kept for it.
		case owner == n.cfg.Node:
			inc, _ := n.b.SessionIncarnation(id)
			switch n.direct.state(origin{h.instance, h.seq}, key(id), inc) {
			case seenPending:
				// The direct copy is being stored here: whether the
				// session has it is known in a moment.
				later = append(later, id)
				continue
			case seenStored:
				// The session held here had the direct copy: not again.
				n.log.Debug("cluster: relayed message already delivered directly", "client_id", id, "topic", m.Topic)
			default:
				here = append(here, id)
			}
		case !down[owner]:
			// Moved on: to its owner's subject. The ID names this
			// hop, so a session that comes back here later gets it.
			msg.InProgress()
			if n.relayTo(owner, msg.Data(), []string{id}, fmt.Sprintf("r-%s-%d-%s-%016x-%d", key(node), sseq, key(id), h.instance, h.seq), 5*time.Second) != nil {
				later = append(later, id)
				continue
			}
		default:
			later = append(later, id)
			continue
		}
		if done == nil {
			done = make(map[string]bool)
		}
		done[id] = true
	}
	if len(here) > 0 {
		msg.InProgress()
		safe, missing, full := n.b.InjectRelayed(m, here)
		if !safe {
			missing, full = here, nil
		}
		for _, id := range full {
			// Its queue is past its hard limit: the message waits here,
			// in the stream, rather than be dropped (flow.go).
			delete(done, id)
			later = append(later, id)
		}
		for _, id := range missing {
			if !safe || meta.NumDelivered < relayUnheld {
				// Not stored, or named here but not held: claimed a
				// moment ago and not installed yet, or just handed to a
				// node whose claim this node has not seen yet.
				delete(done, id)
				later = append(later, id)
			} else {
				n.log.Warn("cluster: dropping a relayed message for a session this node owns but has not held for a minute",
					"client_id", id, "topic", m.Topic)
			}
		}
	}
	n.log.Debug("cluster: relayed message", "subject_of", node, "seq", sseq, "topic", m.Topic,
		"targets", msg.Headers()[hdrTargets], "here", here, "later", later)
	if len(later) > 0 {
		if len(handled) >= 100_000 {
			clear(handled) // entries another consumer finished pile up
		}
		handled[sseq] = done
		msg.NakWithDelay(relayRetry)
		return
	}
	delete(handled, sseq)
	msg.Ack()
}

// ownerOf is the node the sessions bucket names as clientID's owner: from
// this node's copy, or, for a session not in it, from the bucket itself
// (a record written a moment ago may not have arrived yet).
func (n *Node) ownerOf(clientID string) (owner string, found bool, err error) {
	if owner, ok := n.mirroredOwner(key(clientID)); ok {
		return owner, true, nil
	}
	owner, err = n.readOwner(clientID)
	if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, errBadRecord) {
		return "", false, nil
	}
	return owner, err == nil, err
}

// mirroredOwner is the owner this node's copy of the sessions bucket has
// for key k.
func (n *Node) mirroredOwner(k string) (string, bool) {
	n.ownersMu.Lock()
	defer n.ownersMu.Unlock()
	m, ok := n.owners[k]
	return m.rec.Node, ok
}

// readOwner reads clientID's owner from the sessions bucket itself
// (jetstream.ErrKeyNotFound: no record).
func (n *Node) readOwner(clientID string) (string, error) {
	ctx, cancel := context.WithTimeout(n.ctx, kvTimeout)
	defer cancel()
	e, err := n.sessions.Get(ctx, key(clientID))
	if err != nil {
		return "", err
	}
	var r record
	if err := json.Unmarshal(e.Value(), &r); err != nil {
		return "", fmt.Errorf("%w: %v", errBadRecord, err)
	}
	return r.Node, nil
}

var errBadRecord = errors.New("cluster: unreadable session record")

// flushForwards relays what still waits for confirmation, before the
// node closes: a publisher may have its acknowledgement queued behind it.
// Bounded by wait.
func (n *Node) flushForwards(wait time.Duration) {
	if n.rel.js.Load() == nil {
		return
	}
	n.relayDue(time.Now(), nil, true)
	for deadline := time.Now().Add(wait); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		n.rel.mu.Lock()
		left := len(n.rel.pend)
		n.rel.mu.Unlock()
		if left == 0 {
			return
		}
	}
}
