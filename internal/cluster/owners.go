package cluster

// SessionOwners counts the sessions each node owns, by node name, as this
// node's mirror of the sessions bucket has them (for operators: the
// dashboard's cluster view). It reads memory only.
func (n *Node) SessionOwners() map[string]int {
	n.ownersMu.Lock()
	defer n.ownersMu.Unlock()
	out := make(map[string]int)
	for _, m := range n.owners {
		if m.rec.Node != "" {
			out[m.rec.Node]++
		}
	}
	return out
}
