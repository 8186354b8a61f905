package cluster

import (
	"net"
	"slices"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Peers lists the other nodes heard from within liveWithin (heartbeats,
// lease.go), learning on the way the names of the nodes it has routes to.
func (n *Node) Peers() []string {
	if !n.started.Load() {
		return nil
	}
	n.routeNames()
	live := n.livePeers()
	n.notePeers(live)
	return live
}

// notePeers adds live peers to those seen since the start.
func (n *Node) notePeers(live []string) {
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	for _, p := range live {
		n.seen[p] = true
	}
}

// routeNames notes the names of the nodes this one has routes to, and the
// configured address behind those it dialled.
func (n *Node) routeNames() {
	rz, err := n.ns.Routez(&server.RoutezOptions{})
	if err != nil {
		return
	}
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	for _, r := range rz.Routes {
		if r.RemoteName == "" {
			continue
		}
		n.seen[r.RemoteName] = true
		if r.DidSolicit {
			n.addrName[net.JoinHostPort(r.IP, strconv.Itoa(r.Port))] = r.RemoteName
		}
	}
}

// learnNames asks the connected nodes behind configured addresses not yet
// mapped to a name for theirs (a node answers for the address it listens
// on, which is the one its peers list unless they name it otherwise).
func (n *Node) learnNames() {
	live := n.Peers()
	n.peersMu.Lock()
	known := make(map[string]bool)
	var ask []string
	for _, a := range n.cfg.Peers {
		if name, ok := n.addrName[a]; ok {
			known[name] = true
		} else {
			ask = append(ask, a)
		}
	}
	n.peersMu.Unlock()
	unmapped := 0
	for _, p := range live {
		if !known[p] {
			unmapped++
		}
	}
	if unmapped == 0 {
		return
	}
	for _, a := range ask {
		msg, err := n.pc.Request(whoisPrefix+key(a), nil, 200*time.Millisecond)
		if err != nil || len(msg.Data) == 0 {
			continue
		}
		n.peersMu.Lock()
		n.addrName[a] = string(msg.Data)
		n.peersMu.Unlock()
	}
}

// Health is a node's view of its cluster.
type Health struct {
	// Ready: the replicated state is set up and the node holds its lease
	// (a majority of the configured nodes, this one included, hears it;
	// lease.go), so it serves clients; otherwise it refuses connects.
	Ready bool
	Peers []string // other nodes connected now
	// Down names the configured nodes not connected now: by name once
	// this node has seen them, otherwise by their configured address.
	Down []string
}

// Health reports whether the node can serve as part of its cluster, and
// which nodes are missing.
func (n *Node) Health() Health {
	h := Health{Peers: n.Peers()}
	if h.Peers == nil {
		h.Peers = []string{}
	}
	h.Ready = n.serving()
	n.peersMu.Lock()
	defer n.peersMu.Unlock()
	live := make(map[string]bool)
	for _, p := range h.Peers {
		live[p] = true
	}
	for name := range n.seen {
		if !live[name] && name != n.cfg.Node {
			h.Down = append(h.Down, name)
		}
	}
	// Nodes never seen since the start are known only by the address
	// they are configured with; list those not known to be someone seen.
	missing := len(n.cfg.Peers) - len(h.Peers) - len(h.Down)
	if missing > 0 {
		var unknown []string
		for _, a := range n.cfg.Peers {
			if name, ok := n.addrName[a]; !ok || !n.seen[name] {
				unknown = append(unknown, a)
			}
		}
		if len(unknown) == missing || len(h.Peers) == 0 {
			h.Down = append(h.Down, unknown...)
		} else {
			// Which of them answer is not known: say how many do not.
			h.Down = append(h.Down, strconv.Itoa(missing)+" of "+joinComma(unknown))
		}
	}
	slices.Sort(h.Down)
	if h.Down == nil {
		h.Down = []string{}
	}
	return h
}
