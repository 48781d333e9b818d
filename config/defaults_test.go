package config

import (
	"testing"
	"time"

	"github.com/gqlbridge/gqlbridge/bridge"
)

// TestDefaultsAgree: the defaults config names in its errors and checks
// for the keys it leaves to the service are the ones the service (package
// bridge) fills in.
func TestDefaultsAgree(t *testing.T) {
	t.Parallel()
	for key, v := range map[string][2]int64{
		"server.max_query_bytes":                    {defaultMaxQueryBytes, bridge.DefaultMaxQueryBytes},
		"server.max_variables_bytes":                {defaultMaxVariablesBytes, bridge.DefaultMaxVariablesBytes},
		"server.max_batch":                          {defaultMaxBatch, bridge.DefaultMaxBatch},
		"server.max_batch_bytes":                    {defaultMaxBatchBytes, bridge.DefaultMaxBatchBytes},
		"server.max_queued_bytes":                   {defaultMaxQueuedBytes, bridge.DefaultMaxQueuedBytes},
		"upstreams.*.max_operations_per_connection": {defaultMaxOpsPerConn, bridge.DefaultMaxOpsPerConn},
		"upstreams.*.queue.size":                    {defaultQueueSize, bridge.DefaultQueueSize},
		"upstreams.*.queue.max_bytes":               {defaultQueueMaxBytes, bridge.DefaultQueueMaxBytes},
		"upstreams.*.idle_timeout":                  {int64(defaultIdleTimeout), int64(bridge.DefaultIdleTimeout)},
	} {
		if v[0] != v[1] {
			t.Errorf("%s: config's default is %d, the service's %d", key, v[0], v[1])
		}
	}
	if got := orDefault(time.Minute); got != "0s means the default, 1m" {
		t.Errorf("orDefault(1m) = %q", got)
	}
}
