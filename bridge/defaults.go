package bridge

import "time"

// Defaults of the Config and Upstream fields left zero. Package config
// documents the same values for the keys they back; its tests check that
// the two agree.
const (
	DefaultMaxQueryBytes     = 64 << 10  // Config.MaxQueryBytes
	DefaultMaxVariablesBytes = 64 << 10  // Config.MaxVariablesBytes
	DefaultMaxBatch          = 1024      // Config.MaxBatch
	DefaultMaxQueuedBytes    = 256 << 20 // Config.MaxQueuedBytes
	// DefaultMaxBatchBytes (Config.MaxBatchBytes) is a quarter of the
	// 4 MiB that gRPC clients accept by default.
	DefaultMaxBatchBytes = 1 << 20

	DefaultMaxOpsPerConn = 1000             // Upstream.MaxOpsPerConn
	DefaultQueueSize     = 262144           // Upstream.QueueSize
	DefaultQueueMaxBytes = 256 << 20        // Upstream.QueueMaxBytes
	DefaultIdleTimeout   = 30 * time.Second // Upstream.IdleTimeout
)

// orDefault sets *v to d when it is not positive.
func orDefault[T int | time.Duration](v *T, d T) {
	if *v <= 0 {
		*v = d
	}
}
