package session

import "time"

// Defaults of the Config and Backoff fields left zero. Package config
// names these constants where it documents the defaults of the upstream
// keys they back, so the two cannot disagree.
const (
	DefaultDialTimeout      = 10 * time.Second // Config.DialTimeout
	DefaultAckTimeout       = 10 * time.Second // Config.AckTimeout
	DefaultKeepAlive        = 15 * time.Second // Config.KeepAlive
	DefaultKeepAliveTimeout = 10 * time.Second // Config.KeepAliveTimeout
	DefaultWriteTimeout     = 10 * time.Second // Config.WriteTimeout
	DefaultRotateBefore     = time.Minute      // Config.RotateBefore
	DefaultMaxMessageBytes  = 16 << 20         // Config.MaxMessageBytes

	DefaultBackoffInitial    = 100 * time.Millisecond // Backoff.Initial
	DefaultBackoffMax        = 10 * time.Second       // Backoff.Max
	DefaultBackoffMultiplier = 2                      // Backoff.Multiplier
	DefaultStableAfter       = 10 * time.Second       // Backoff.StableAfter
)
