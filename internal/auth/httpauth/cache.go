package httpauth

import (
	"container/list"
	"crypto/sha256"
	"sync"
	"time"
)

// cache keeps at most max answers, dropping the least recently used one
// to make room; an answer past its expiry is never returned.
type cache struct {
	mu    sync.Mutex
	max   int
	ll    *list.List // of *entry, most recently used first
	items map[[sha256.Size]byte]*list.Element
}

type entry struct {
	key     [sha256.Size]byte
	answer  Answer
	expires time.Time
}

func newCache(max int) *cache {
	return &cache{max: max, ll: list.New(), items: make(map[[sha256.Size]byte]*list.Element)}
}

func (c *cache) get(k [sha256.Size]byte, now time.Time) (Answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return Answer{}, false
	}
	e := el.Value.(*entry)
	if !now.Before(e.expires) {
		c.ll.Remove(el)
		delete(c.items, k)
		return Answer{}, false
	}
	c.ll.MoveToFront(el)
	return e.answer, true
}

func (c *cache) put(k [sha256.Size]byte, a Answer, expires time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		e := el.Value.(*entry)
		e.answer, e.expires = a, expires
		c.ll.MoveToFront(el)
		return
	}
	if c.ll.Len() >= c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.items, last.Value.(*entry).key)
	}
	c.items[k] = c.ll.PushFront(&entry{key: k, answer: a, expires: expires})
}

func (c *cache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

func (c *cache) purge() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ll.Init()
	clear(c.items)
}
