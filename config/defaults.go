package config

import (
	"fmt"
	"strings"
	"time"
)

// Defaults. config fills in only the defaults that no library has: the
// listen addresses, drain_grace, queue.policy and dedup. Every other key
// it leaves 0 when unset, and the session (package session) or the service
// (package bridge) fills in its own default; config names those defaults
// in its errors and uses them in its checks. The session's are its
// exported constants. The service's are repeated below, because config does
// not depend on the service (nor on gRPC), and TestDefaultsAgree checks
// them against bridge's constants.
const (
	defaultGRPCAddress  = "127.0.0.1:50051"
	defaultAdminAddress = "127.0.0.1:9090"
	defaultDrainGrace   = 10 * time.Second

	defaultMaxQueryBytes     = 64 << 10         // server.max_query_bytes: bridge.DefaultMaxQueryBytes
	defaultMaxVariablesBytes = 64 << 10         // server.max_variables_bytes: bridge.DefaultMaxVariablesBytes
	defaultMaxBatch          = 1024             // server.max_batch: bridge.DefaultMaxBatch
	defaultMaxBatchBytes     = 1 << 20          // server.max_batch_bytes: bridge.DefaultMaxBatchBytes
	defaultMaxQueuedBytes    = 256 << 20        // server.max_queued_bytes: bridge.DefaultMaxQueuedBytes
	defaultMaxOpsPerConn     = 1000             // upstreams.*.max_operations_per_connection: bridge.DefaultMaxOpsPerConn
	defaultQueueSize         = 262144           // upstreams.*.queue.size: bridge.DefaultQueueSize
	defaultQueueMaxBytes     = 256 << 20        // upstreams.*.queue.max_bytes: bridge.DefaultQueueMaxBytes
	defaultIdleTimeout       = 30 * time.Second // upstreams.*.idle_timeout: bridge.DefaultIdleTimeout
)

// orDefault says, for an error, that 0 means the default v.
func orDefault[T int | time.Duration](v T) string {
	if d, ok := any(v).(time.Duration); ok {
		s := d.String()
		if strings.HasSuffix(s, "m0s") { // 1m0s reads 1m
			s = strings.TrimSuffix(s, "0s")
		}
		return "0s means the default, " + s
	}
	return fmt.Sprintf("0 means the default, %d", v)
}
