package topic

import (
	"strings"
	"sync"
	"sync/atomic"
)

// Entry is one subscription returned by Index.Match.
type Entry[V any] struct {
	Client string // client ID (session key)
	Group  string // share group name, "" for a normal subscription
	Filter string // the filter without the $share prefix
	Value  V
}

// Index is the subscription index: a trie with one node per topic level, the
// wildcard children '+' and '#' held in dedicated pointers, and the
// subscriptions of a filter in a slice at the filter's last node. A per-client
// index (client -> (group, filter) -> position) makes Remove, RemoveClient and
// ClientSubscriptions independent of the size of the trie.
//
// Locking: one sync.RWMutex. Match and the read methods take the read lock,
// so readers don't block each other; Add and Remove take the write lock.
// Filters must be valid (ValidateFilter, with any $share prefix removed);
// for invalid ones the results are unspecified but nothing panics.
//
// The index keeps its own copies of client IDs, groups and filters, so callers
// may pass strings that alias reusable buffers.
type Index[V any] struct {
	mu      sync.RWMutex
	root    node[V]
	clients map[string]*client[V] // invariant: no client with zero refs
	n       int                   // number of subscriptions
	// gen changes with every change to the subscriptions, under mu: a
	// caller that keeps a Match result may reuse it while gen is the
	// same (MatchGen, Gen).
	gen atomic.Uint64
	// interest, when set, hears when a (group, filter) gains its first
	// subscription or loses its last; a cluster propagates interest with it.
	interest func(group, filter string, on bool)
}

// OnInterest sets fn to be called, under the index's write lock, whenever a
// (group, filter) pair gains its first subscriber or loses its last. fn must
// not block or call back into the index. Set it before the first Add.
func (ix *Index[V]) OnInterest(fn func(group, filter string, on bool)) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	ix.interest = fn
}

// count changes the number of n's subscriptions in group by d and reports
// whether the group went from none to some or from some to none.
func (n *node[V]) count(group string, d int) bool {
	if n.groups == nil {
		n.groups = make(map[string]int)
	}
	c := n.groups[group] + d
	if c <= 0 {
		delete(n.groups, group)
		if len(n.groups) == 0 {
			n.groups = nil
		}
		return true
	}
	n.groups[group] = c
	return c == 1 && d > 0
}

// node is one topic level of a filter.
type node[V any] struct {
	parent   *node[V]
	key      string              // this node's level in parent.children ("" for '+' and '#' children)
	children map[string]*node[V] // literal levels; nil when empty
	plus     *node[V]            // the '+' child
	hash     *node[V]            // the '#' child; it never has children
	filter   string              // the filter ending here; set while len(subs) > 0
	subs     []sub[V]            // subscriptions on filter, at most one per (client, group)
	groups   map[string]int      // subscriptions per group; kept only with an interest hook
}

// sub is one subscription stored at the node of its filter.
type sub[V any] struct {
	client string // shared with client.id
	group  string
	value  V
}

// subKey identifies one of a client's subscriptions.
type subKey struct{ group, filter string }

// ref locates a client's subscription: n.subs[i].
type ref[V any] struct {
	key subKey
	n   *node[V]
	i   int
}

// smallRefs is how many subscriptions a client holds before its refs get a
// map; most clients have a handful, and a small slice costs less than a map.
const smallRefs = 8

// client is the per-client index.
type client[V any] struct {
	id    string
	refs  []ref[V]
	byKey map[subKey]int // index into refs; nil until len(refs) > smallRefs
}

// NewIndex returns an empty index.
func NewIndex[V any]() *Index[V] {
	return &Index[V]{clients: make(map[string]*client[V])}
}

// Add adds or replaces client's subscription on (group, filter); replaced
// reports whether one existed. filter is the inner filter (no $share prefix).
func (ix *Index[V]) Add(clientID, group, filter string, v V) (replaced bool) {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	c := ix.clients[clientID]
	if c != nil {
		if j := c.find(subKey{group, filter}); j >= 0 {
			r := c.refs[j]
			r.n.subs[r.i].value = v
			ix.gen.Add(1)
			return true
		}
	} else {
		c = &client[V]{id: strings.Clone(clientID)}
		ix.clients[c.id] = c
	}
	n := ix.insert(filter)
	group = strings.Clone(group)
	if ix.interest != nil && n.count(group, 1) {
		ix.interest(group, n.filter, true)
	}
	n.subs = append(n.subs, sub[V]{client: c.id, group: group, value: v})
	c.add(ref[V]{key: subKey{group, n.filter}, n: n, i: len(n.subs) - 1})
	ix.n++
	ix.gen.Add(1)
	return false
}

// insert returns the node of filter, creating the missing nodes.
func (ix *Index[V]) insert(filter string) *node[V] {
	f, owned := filter, false
	own := func() {
		if !owned {
			f, owned = strings.Clone(filter), true
		}
	}
	n := &ix.root
	for i := 0; ; {
		e := levelEnd(f, i)
		lvl := f[i:e]
		var next **node[V]
		switch lvl {
		case "+":
			next = &n.plus
		case "#":
			next = &n.hash
		}
		if next != nil {
			if *next == nil {
				*next = &node[V]{parent: n}
			}
			n = *next
		} else {
			c := n.children[lvl]
			if c == nil {
				own()
				lvl = f[i:e]
				c = &node[V]{parent: n, key: lvl}
				if n.children == nil {
					n.children = make(map[string]*node[V])
				}
				n.children[lvl] = c
			}
			n = c
		}
		if e == len(f) {
			break
		}
		i = e + 1
	}
	if n.filter == "" {
		own()
		n.filter = f
	}
	return n
}

// Remove deletes client's subscription on (group, filter), pruning empty trie
// nodes; reports whether it existed.
func (ix *Index[V]) Remove(clientID, group, filter string) bool {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	c := ix.clients[clientID]
	if c == nil {
		return false
	}
	j := c.find(subKey{group, filter})
	if j < 0 {
		return false
	}
	r := c.refs[j]
	c.removeAt(j)
	ix.removeSub(r)
	if len(c.refs) == 0 {
		delete(ix.clients, clientID)
	}
	ix.n--
	ix.gen.Add(1)
	return true
}

// RemoveClient removes every subscription of client and returns how many
// were removed.
func (ix *Index[V]) RemoveClient(clientID string) int {
	ix.mu.Lock()
	defer ix.mu.Unlock()
	c := ix.clients[clientID]
	if c == nil {
		return 0
	}
	// removeSub may move another of c's subs and fix its ref in place, so
	// read c.refs[j] afresh each time.
	for j := range c.refs {
		ix.removeSub(c.refs[j])
	}
	delete(ix.clients, clientID)
	ix.n -= len(c.refs)
	ix.gen.Add(1)
	return len(c.refs)
}

// removeSub deletes r.n.subs[r.i] by moving the last sub into its place,
// fixes the moved sub's ref, and prunes the node if it became empty.
func (ix *Index[V]) removeSub(r ref[V]) {
	n := r.n
	if ix.interest != nil && n.count(n.subs[r.i].group, -1) {
		ix.interest(n.subs[r.i].group, n.filter, false)
	}
	last := len(n.subs) - 1
	if r.i != last {
		moved := n.subs[last]
		n.subs[r.i] = moved
		mc := ix.clients[moved.client]
		mc.refs[mc.find(subKey{moved.group, n.filter})].i = r.i
	}
	n.subs[last] = sub[V]{} // drop references for the GC
	n.subs = n.subs[:last]
	if last > 0 {
		return
	}
	n.subs, n.filter = nil, ""
	for n != &ix.root && n.subs == nil && n.children == nil && n.plus == nil && n.hash == nil {
		p := n.parent
		switch n {
		case p.plus:
			p.plus = nil
		case p.hash:
			p.hash = nil
		default:
			delete(p.children, n.key)
			if len(p.children) == 0 {
				p.children = nil
			}
		}
		n = p
	}
}

// Len returns the number of subscriptions.
func (ix *Index[V]) Len() int {
	ix.mu.RLock()
	defer ix.mu.RUnlock()
	return ix.n
}

// ClientSubscriptions calls fn for every subscription of client (any order);
// it stops when fn returns false. fn runs on a snapshot taken under the read
// lock and without the lock held, so it may call Add or Remove.
func (ix *Index[V]) ClientSubscriptions(clientID string, fn func(group, filter string, v V) bool) {
	type item struct {
		group, filter string
		v             V
	}
	ix.mu.RLock()
	c := ix.clients[clientID]
	if c == nil {
		ix.mu.RUnlock()
		return
	}
	items := make([]item, len(c.refs))
	for j, r := range c.refs {
		items[j] = item{r.key.group, r.key.filter, r.n.subs[r.i].value}
	}
	ix.mu.RUnlock()
	for _, it := range items {
		if !fn(it.group, it.filter, it.v) {
			return
		}
	}
}

// Match appends to dst every subscription (normal and shared) whose filter
// matches name, and returns dst. Each (client, group, filter) appears at most
// once; a client appears once per matching filter. It allocates only to grow
// dst.
func (ix *Index[V]) Match(name string, dst []Entry[V]) []Entry[V] {
	ix.mu.RLock()
	// [MQTT-4.7.2-1] filters starting with a wildcard don't match "$..." names.
	dst = ix.root.match(name, 0, name == "" || name[0] != '$', dst)
	ix.mu.RUnlock()
	return dst
}

// MatchGen is Match, also returning the generation of the subscriptions
// it matched: the result stays what Match would return for name while Gen
// returns the same.
func (ix *Index[V]) MatchGen(name string, dst []Entry[V]) ([]Entry[V], uint64) {
	ix.mu.RLock()
	dst = ix.root.match(name, 0, name == "" || name[0] != '$', dst)
	gen := ix.gen.Load()
	ix.mu.RUnlock()
	return dst, gen
}

// Gen returns the generation of the subscriptions: it changes with every
// Add, Remove and RemoveClient that changes them.
func (ix *Index[V]) Gen() uint64 { return ix.gen.Load() }

// Count returns the number of subscriptions (normal and shared) whose
// filter matches name, leaving out those of the client except ("" leaves
// out none): what Match would return, counted without copying. It does not
// allocate.
func (ix *Index[V]) Count(name, except string) int {
	ix.mu.RLock()
	n := ix.root.countMatch(name, 0, name == "" || name[0] != '$', except)
	ix.mu.RUnlock()
	return n
}

// countMatch is match, counting.
func (n *node[V]) countMatch(name string, start int, wild bool, except string) int {
	c := 0
	if wild && n.hash != nil {
		c += n.hash.countSubs(except)
	}
	end := levelEnd(name, start)
	if n.children != nil {
		if ch := n.children[name[start:end]]; ch != nil {
			c += ch.countNext(name, end, except)
		}
	}
	if wild && n.plus != nil {
		c += n.plus.countNext(name, end, except)
	}
	return c
}

// countNext is next, counting.
func (n *node[V]) countNext(name string, end int, except string) int {
	if end == len(name) {
		c := n.countSubs(except)
		if n.hash != nil {
			c += n.hash.countSubs(except)
		}
		return c
	}
	if n.children == nil && n.plus == nil && n.hash == nil {
		return 0
	}
	return n.countMatch(name, end+1, true, except)
}

func (n *node[V]) countSubs(except string) int {
	c := len(n.subs)
	if except != "" {
		for i := range n.subs {
			if n.subs[i].client == except {
				c--
			}
		}
	}
	return c
}

// match collects the subscriptions below n for the levels name[start:]; n
// sits above the level starting at start. wild is false to skip n's wildcard
// children.
func (n *node[V]) match(name string, start int, wild bool, dst []Entry[V]) []Entry[V] {
	if wild && n.hash != nil {
		dst = n.hash.appendSubs(dst) // '#' matches this level and all below
	}
	end := levelEnd(name, start)
	if n.children != nil {
		if c := n.children[name[start:end]]; c != nil {
			dst = c.next(name, end, dst)
		}
	}
	if wild && n.plus != nil {
		dst = n.plus.next(name, end, dst)
	}
	return dst
}

// next continues below n, which matched the level ending at end.
func (n *node[V]) next(name string, end int, dst []Entry[V]) []Entry[V] {
	if end == len(name) {
		dst = n.appendSubs(dst)
		if n.hash != nil {
			dst = n.hash.appendSubs(dst) // "sport/#" matches "sport" [MQTT-4.7.1-1]
		}
		return dst
	}
	if n.children == nil && n.plus == nil && n.hash == nil {
		return dst
	}
	return n.match(name, end+1, true, dst)
}

func (n *node[V]) appendSubs(dst []Entry[V]) []Entry[V] {
	for i := range n.subs {
		s := &n.subs[i]
		dst = append(dst, Entry[V]{Client: s.client, Group: s.group, Filter: n.filter, Value: s.value})
	}
	return dst
}

// find returns the index in c.refs of key, or -1.
func (c *client[V]) find(key subKey) int {
	if c.byKey != nil {
		if j, ok := c.byKey[key]; ok {
			return j
		}
		return -1
	}
	for j := range c.refs {
		if c.refs[j].key == key {
			return j
		}
	}
	return -1
}

func (c *client[V]) add(r ref[V]) {
	c.refs = append(c.refs, r)
	switch {
	case c.byKey != nil:
		c.byKey[r.key] = len(c.refs) - 1
	case len(c.refs) > smallRefs:
		c.byKey = make(map[subKey]int, len(c.refs))
		for j := range c.refs {
			c.byKey[c.refs[j].key] = j
		}
	}
}

// removeAt deletes c.refs[j] by moving the last ref into its place.
func (c *client[V]) removeAt(j int) {
	last := len(c.refs) - 1
	if c.byKey != nil {
		delete(c.byKey, c.refs[j].key)
	}
	if j != last {
		c.refs[j] = c.refs[last]
		if c.byKey != nil {
			c.byKey[c.refs[j].key] = j
		}
	}
	c.refs[last] = ref[V]{}
	c.refs = c.refs[:last]
}
