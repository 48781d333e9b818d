package credential

import (
	"context"
	"sync"
	"time"
)

// Cache keeps the last token of a Source until it is rejected or near its
// expiry, and collapses concurrent fetches into one: when a hundred
// connections are rejected at once, the Source is asked once.
type Cache struct {
	Source Source
	// Skew treats a token as expired this long before its expiry. Default 30s.
	Skew time.Duration
	now  func() time.Time

	mu       sync.Mutex
	tok      Token
	have     bool
	inflight *fetch
}

type fetch struct {
	done chan struct{}
	tok  Token
	err  error
}

// NewCache wraps src.
func NewCache(src Source) *Cache { return &Cache{Source: src} }

// Token returns the cached token, fetching when there is none, it is near
// expiry, or req says the upstream rejected it or it is expiring.
func (c *Cache) Token(ctx context.Context, req Request) (Token, error) {
	now := time.Now
	if c.now != nil {
		now = c.now
	}
	skew := c.Skew
	if skew <= 0 {
		skew = 30 * time.Second
	}
	c.mu.Lock()
	fresh := c.have && (c.tok.Expiry.IsZero() || now().Add(skew).Before(c.tok.Expiry))
	if fresh && !req.Refresh && !req.Expiring {
		t := c.tok
		c.mu.Unlock()
		return t, nil
	}
	f := c.inflight
	if f == nil {
		f = &fetch{done: make(chan struct{})}
		c.inflight = f
		go c.run(f, req)
	}
	c.mu.Unlock()
	select {
	case <-f.done:
		return f.tok, f.err
	case <-ctx.Done():
		return Token{}, ctx.Err()
	}
}

// run fetches without the caller's context, so one caller giving up does not
// fail the others waiting on the same fetch; the source's own timeouts bound it.
func (c *Cache) run(f *fetch, req Request) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	f.tok, f.err = c.Source.Token(ctx, req)
	c.mu.Lock()
	if f.err == nil {
		c.tok, c.have = f.tok, true
	}
	c.inflight = nil
	c.mu.Unlock()
	close(f.done)
}
