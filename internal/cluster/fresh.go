package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// A read of the sessions bucket (Get) is a direct get, which the nearest
// replica answers: this node's own, which may be behind the bucket's
// leader. A claim whose compare-and-set lost to a newer revision (another
// write landed between its read and its write: the old owner recording
// its client's disconnect, say) read the record again from that replica,
// which under load kept answering with the revision just refused: eight
// immediate re-reads all lost, and the connect was refused as contended
// although nobody contended any more. So a claim reads again from the
// leader (readNewer), and, should even the leader not have applied the
// newer revision yet, waits for it rather than spend an attempt.

// readRecord reads clientID's record for a compare-and-set: from this
// node's replica first (refused 0), and from the leader, newer than
// refused, once a compare-and-set at revision refused was lost. The
// confirmations of ownership (confirmOwner, ownForWill) used to re-read
// the replica too, and lost all their attempts the same way
// (TestClaimNotRefusedByLaggingReplica met it: the owner's own
// confirmation, just after its record of the client's disconnect).
func (n *Node) readRecord(ctx context.Context, clientID string, refused uint64) (jetstream.KeyValueEntry, error) {
	if refused != 0 {
		return n.readNewer(ctx, key(clientID), refused)
	}
	e, err := n.sessions.Get(ctx, key(clientID))
	if f := replicaReadFault.Load(); f != nil && err == nil {
		e = (*f)(clientID, e)
	}
	return e, err
}

// readNewer reads the record of key k from the bucket's leader, waiting
// (within ctx) while the leader still has revision refused or an older
// one: a compare-and-set at refused just failed, so a newer one exists.
func (n *Node) readNewer(ctx context.Context, k string, refused uint64) (jetstream.KeyValueEntry, error) {
	for wait := 2 * time.Millisecond; ; wait = min(2*wait, 50*time.Millisecond) {
		e, err := n.leaderGet(ctx, sessionsBucket, k)
		if err != nil || e.Revision() > refused {
			return e, err
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("cluster: read %s newer than revision %d: %w", k, refused, ctx.Err())
		case <-time.After(wait):
		}
	}
}

// leaderGet reads the latest value of key k in bucket from the bucket's
// stream leader (the stream API's message get, which only the leader
// answers), not from a replica. A deleted or purged key, or none, is
// jetstream.ErrKeyNotFound.
func (n *Node) leaderGet(ctx context.Context, bucket, k string) (jetstream.KeyValueEntry, error) {
	req := mustJSON(struct {
		LastBySubj string `json:"last_by_subj"`
	}{"$KV." + bucket + "." + k})
	msg, err := n.pc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
	if err != nil {
		return nil, fmt.Errorf("cluster: read %s from the leader: %w", k, err)
	}
	var resp struct {
		Error   *jetstream.APIError `json:"error"`
		Message *struct {
			Seq  uint64    `json:"seq"`
			Hdrs []byte    `json:"hdrs"`
			Data []byte    `json:"data"`
			Time time.Time `json:"time"`
		} `json:"message"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return nil, fmt.Errorf("cluster: read %s from the leader: %w", k, err)
	}
	if resp.Error != nil {
		if resp.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, jetstream.ErrKeyNotFound
		}
		return nil, fmt.Errorf("cluster: read %s from the leader: %w", k, resp.Error)
	}
	m := resp.Message
	if m == nil {
		return nil, fmt.Errorf("cluster: read %s from the leader: empty answer", k)
	}
	if len(m.Hdrs) > 0 {
		h, err := nats.DecodeHeadersMsg(m.Hdrs)
		if err != nil {
			return nil, fmt.Errorf("cluster: read %s from the leader: %w", k, err)
		}
		if op := h.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			return nil, jetstream.ErrKeyNotFound
		}
	}
	return &leaderEntry{bucket: bucket, key: k, value: m.Data, rev: m.Seq, created: m.Time}, nil
}

// leaderEntry is a value leaderGet read.
type leaderEntry struct {
	bucket, key string
	value       []byte
	rev         uint64
	created     time.Time
}

func (e *leaderEntry) Bucket() string                  { return e.bucket }
func (e *leaderEntry) Key() string                     { return e.key }
func (e *leaderEntry) Value() []byte                   { return e.value }
func (e *leaderEntry) Revision() uint64                { return e.rev }
func (e *leaderEntry) Created() time.Time              { return e.created }
func (e *leaderEntry) Delta() uint64                   { return 0 }
func (e *leaderEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }
