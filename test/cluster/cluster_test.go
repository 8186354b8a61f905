// Package cluster_test runs three Starling nodes in one process, joined over
// loopback into one cluster, and drives them with clients connected to
// different nodes.
package cluster_test

import (
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/starling-mqtt/starling"
	"github.com/starling-mqtt/starling/internal/packet"
	"github.com/starling-mqtt/starling/internal/testutil"
)

type node struct {
	srv  *starling.Server
	addr string // MQTT over TCP
}

// freeAddrs reserves n loopback ports for cluster routes.
func freeAddrs(t *testing.T, n int) []string {
	t.Helper()
	var out []string
	var lns []net.Listener
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns = append(lns, ln)
		out = append(out, ln.Addr().String())
	}
	for _, ln := range lns {
		ln.Close()
	}
	return out
}

// startCluster starts n nodes and waits until their replicated state is
// ready on every one.
func startCluster(t *testing.T, n int, mutate func(i int, c *starling.Config)) []node {
	t.Helper()
	routes := freeAddrs(t, n)
	name := fmt.Sprintf("test-%d", time.Now().UnixNano())
	nodes := make([]node, n)
	for i := range n {
		var peers []string
		for j, r := range routes {
			if j != i {
				peers = append(peers, r)
			}
		}
		srv, addr := testutil.StartBroker(t, func(c *starling.Config) {
			c.HTTP = ""
			c.Cluster.Name = name
			c.Cluster.Node = fmt.Sprintf("n%d", i+1)
			c.Cluster.Listen = routes[i]
			c.Cluster.Peers = peers
			if mutate != nil {
				mutate(i, c)
			}
		})
		nodes[i] = node{srv, addr}
	}
	for i, nd := range nodes {
		select {
		case <-nd.srv.ClusterReady():
		case <-time.After(60 * time.Second):
			t.Fatalf("node n%d: cluster not ready after 60s", i+1)
		}
	}
	return nodes
}

func TestClusterStarts(t *testing.T) {
	nodes := startCluster(t, 3, nil)
	r := testutil.Dial(t, nodes[0].addr, packet.V5)
	defer r.Close()
	if ack := r.Connect("c1", true); ack.ReasonCode != packet.Success {
		t.Fatalf("CONNACK 0x%02x", byte(ack.ReasonCode))
	}
}
