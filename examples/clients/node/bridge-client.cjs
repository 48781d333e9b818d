'use strict';
// A gqlbridge caller for Node with @grpc/grpc-js: subscribe, and resubscribe
// after a stream end exactly as docs/status.md says (the "retry?" column is
// retryable() below). The same policy as the Go package client/.
//
// Needs @grpc/grpc-js, @grpc/proto-loader and protobufjs (proto-loader's own
// dependency): `npm install @grpc/grpc-js @grpc/proto-loader`. The
// repository's tests run it with NODE_PATH pointing at testpeers/node's
// node_modules, installed from its lock file.

const path = require('node:path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const protobuf = require('protobufjs');

// The recommended channel options: round robin over every address the
// target resolves to (every replica behind the headless Service), and
// keepalive pings every 30 s (the bridge accepts one every 10 s at most).
const CHANNEL_OPTIONS = {
  'grpc.service_config': JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
  'grpc.keepalive_time_ms': 30000,
  'grpc.keepalive_timeout_ms': 10000,
  'grpc.keepalive_permit_without_calls': 1,
};

// newClient returns a SubscriptionService client for target, for example
// 'dns:///gqlbridge-headless.NS.svc.cluster.local:50051' or
// 'ipv4:10.0.0.1:50051,10.0.0.2:50051'. protoDir holds
// graphqlbridge/v1/subscription.proto (default: this repository's proto/).
function newClient(target, { protoDir = path.resolve(__dirname, '..', '..', '..', 'proto'), credentials = grpc.credentials.createInsecure(), options = {} } = {}) {
  const definition = protoLoader.loadSync('graphqlbridge/v1/subscription.proto', {
    includeDirs: [protoDir],
    longs: Number, // sequence
    enums: String, // Lifecycle.State by name
    defaults: true,
    oneofs: true, // SubscribeResponse.event names the event
  });
  const { SubscriptionService } = grpc.loadPackageDefinition(definition).graphqlbridge.v1;
  return new SubscriptionService(target, credentials, { ...CHANNEL_OPTIONS, ...options });
}

// google.rpc.Status and its details, to read the grpc-status-details-bin
// trailer.
const rpc = protobuf.Root.fromJSON({
  nested: {
    google: {
      nested: {
        protobuf: {
          nested: {
            Any: { fields: { type_url: { type: 'string', id: 1 }, value: { type: 'bytes', id: 2 } } },
            Duration: { fields: { seconds: { type: 'int64', id: 1 }, nanos: { type: 'int32', id: 2 } } },
          },
        },
        rpc: {
          nested: {
            Status: {
              fields: {
                code: { type: 'int32', id: 1 },
                message: { type: 'string', id: 2 },
                details: { rule: 'repeated', type: 'google.protobuf.Any', id: 3 },
              },
            },
            ErrorInfo: {
              fields: {
                reason: { type: 'string', id: 1 },
                domain: { type: 'string', id: 2 },
                metadata: { keyType: 'string', type: 'string', id: 3 },
              },
            },
            RetryInfo: { fields: { retry_delay: { type: 'google.protobuf.Duration', id: 1 } } },
          },
        },
      },
    },
  },
});
const RpcStatus = rpc.lookupType('google.rpc.Status');
const ErrorInfo = rpc.lookupType('google.rpc.ErrorInfo');
const RetryInfo = rpc.lookupType('google.rpc.RetryInfo');

// details returns the status's ErrorInfo ({reason, domain, metadata}) and
// RetryInfo ({retryDelayMs}), each null when absent.
function details(status) {
  const out = { errorInfo: null, retryInfo: null };
  const [bin] = status.metadata?.get('grpc-status-details-bin') ?? [];
  if (!bin) return out;
  for (const any of RpcStatus.decode(bin).details) {
    const type = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    if (type === 'google.rpc.ErrorInfo') {
      const e = ErrorInfo.toObject(ErrorInfo.decode(any.value), { defaults: true });
      out.errorInfo = { reason: e.reason, domain: e.domain, metadata: e.metadata ?? {} };
    } else if (type === 'google.rpc.RetryInfo') {
      const d = RetryInfo.toObject(RetryInfo.decode(any.value), { longs: Number, defaults: true }).retry_delay ?? {};
      out.retryInfo = { retryDelayMs: (d.seconds ?? 0) * 1000 + Math.round((d.nanos ?? 0) / 1e6) };
    }
  }
  return out;
}

// retryable is the "retry?" column of docs/status.md: whether to subscribe
// again after a stream ended with code, and the least delay (ms) the bridge
// asked for.
//   - RetryInfo present (UNAVAILABLE BRIDGE_DRAINING or UPSTREAM_UNAVAILABLE,
//     RESOURCE_EXHAUSTED LIMIT_REACHED): yes, after at least its delay;
//   - any other status from the bridge (it carries ErrorInfo): no;
//   - UNAVAILABLE, UNKNOWN, INTERNAL from gRPC itself (no ErrorInfo: the
//     connection to the replica broke, a proxy failed): yes, with backoff;
//   - anything else: no.
function retryable(code, { errorInfo, retryInfo }) {
  if (retryInfo) return { retry: true, afterMs: Math.max(0, retryInfo.retryDelayMs) };
  if (errorInfo) return { retry: false, afterMs: 0 };
  const s = grpc.status;
  return { retry: code === s.UNAVAILABLE || code === s.UNKNOWN || code === s.INTERNAL, afterMs: 0 };
}

// The resubscribe policy, as the Go client's DefaultRetry: before the nth
// retry since the subscription was last live, wait the RetryInfo delay plus
// a random delay between 0 and min(initialMs * 2^(n-1), maxMs); give up
// after maxAttempts retries (0: no limit) or when the subscription would stay
// down longer than maxElapsedMs (0: no limit).
const DEFAULT_RETRY = { initialMs: 100, maxMs: 30000, maxAttempts: 0, maxElapsedMs: 5 * 60 * 1000 };

function delayMs(retry, failures, afterMs) {
  const ceiling = Math.min(retry.initialMs * 2 ** (failures - 1), retry.maxMs);
  return afterMs + Math.random() * ceiling;
}

// subscribe runs request (a SubscribeRequest: upstream, query, variables as
// a google.protobuf.Struct object, maxBatch) and keeps it alive. handler's
// optional callbacks get the events in order:
//   onResult({data: Buffer, sequence, stream, peer})   each result, batches unrolled
//   onLifecycle({state, closeCode, closeReason, attempt})
//   onRetry({code, message, errorInfo, retryInfo, delayMs, attempt, stream, peer})
//   onResubscribed({stream, downMs, attempts, peer})
// It returns {cancel(), done}; done resolves with {ok: true} when the
// upstream completed the operation, {cancelled: true} after cancel(), or
// {ok: false, code, message, errorInfo, retryInfo, gaveUp, attempts}.
function subscribe(client, request, handler = {}, retryOptions = {}) {
  const retry = { ...DEFAULT_RETRY, ...retryOptions };
  let call = null;
  let timer = null;
  let cancelled = false;
  let resolveDone;
  const done = new Promise((resolve) => {
    resolveDone = resolve;
  });
  let streams = 0;
  let failures = 0; // retryable ends since the subscription was last live
  let downSince = Date.now();

  function finish(outcome) {
    clearTimeout(timer);
    resolveDone(outcome);
  }

  function start() {
    if (cancelled) return;
    const n = ++streams;
    let delivered = false;
    let peer = '';
    let status = null;
    let ended = false;
    call = client.Subscribe(request);
    const result = (r) => handler.onResult?.({ data: Buffer.from(r.result), sequence: r.sequence, stream: n, peer });
    call.on('data', (resp) => {
      if (!delivered) {
        delivered = true;
        peer = call.getPeer();
        if (failures > 0) handler.onResubscribed?.({ stream: n, downMs: Date.now() - downSince, attempts: failures, peer });
      }
      if (resp.event === 'next') result(resp.next);
      else if (resp.event === 'batch') resp.batch.nexts.forEach(result);
      else if (resp.event === 'lifecycle') handler.onLifecycle?.(resp.lifecycle);
    });
    // The status comes with the stream's end; act once both are in (an
    // error status may come without 'end').
    const settle = () => {
      if (!status || (status.code === grpc.status.OK && !ended)) return;
      const st = status;
      status = null;
      ended = false;
      onStreamEnd(n, st, delivered, peer);
    };
    call.on('status', (s) => {
      status = s;
      settle();
    });
    call.on('end', () => {
      ended = true;
      settle();
    });
    call.on('error', () => {}); // reported through 'status'
  }

  function onStreamEnd(n, st, delivered, peer) {
    if (cancelled) return finish({ cancelled: true });
    if (st.code === grpc.status.OK) return finish({ ok: true });
    if (delivered) {
      failures = 0;
      downSince = Date.now();
    }
    failures++;
    const d = details(st);
    const { retry: again, afterMs } = retryable(st.code, d);
    const outcome = { ok: false, code: st.code, message: st.details, ...d, gaveUp: again, attempts: failures };
    if (!again) return finish({ ...outcome, gaveUp: false });
    const wait = delayMs(retry, failures, afterMs);
    if ((retry.maxAttempts > 0 && failures > retry.maxAttempts) || (retry.maxElapsedMs > 0 && Date.now() - downSince + wait > retry.maxElapsedMs)) {
      return finish(outcome);
    }
    handler.onRetry?.({ code: st.code, message: st.details, ...d, delayMs: wait, attempt: failures, stream: n, peer });
    timer = setTimeout(start, wait);
  }

  start();
  return {
    done,
    cancel() {
      if (cancelled) return;
      cancelled = true;
      if (timer) {
        clearTimeout(timer);
        finish({ cancelled: true });
      }
      call?.cancel();
    },
  };
}

// toStruct turns a JSON object into the google.protobuf.Struct object form
// proto-loader wants (for SubscribeRequest.variables and extensions).
function toStruct(o) {
  const value = (v) => {
    if (v === null) return { nullValue: 'NULL_VALUE' };
    switch (typeof v) {
      case 'number': return { numberValue: v };
      case 'string': return { stringValue: v };
      case 'boolean': return { boolValue: v };
    }
    if (Array.isArray(v)) return { listValue: { values: v.map(value) } };
    return { structValue: toStruct(v) };
  };
  return { fields: Object.fromEntries(Object.entries(o).map(([k, v]) => [k, value(v)])) };
}

module.exports = { newClient, subscribe, retryable, details, toStruct, CHANNEL_OPTIONS, DEFAULT_RETRY };
