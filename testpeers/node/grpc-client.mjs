#!/usr/bin/env node
// A non-Go caller of gqlbridge: @grpc/grpc-js with the service definition
// loaded at run time by @grpc/proto-loader from the repository's proto/
// directory. Used by bridge/node_client_test.go to prove that a client in
// another language gets the events and can read the bridge's error details.
//
// Usage:
//   node grpc-client.mjs ADDRESS UPSTREAM QUERY [VARIABLES_JSON] [--max-batch N]
//
// --max-batch N sets SubscribeRequest.max_batch: results then arrive in
// batches, and each batch is printed as a "batch" line followed by one
// "next" line per result, in order.
//
// Prints one JSON line per event to stdout:
//   {"next":{"sequence":N,"result":<the result, parsed>}}
//   {"batch":{"size":N}}  (then N "next" lines)
//   {"lifecycle":{"state":"STATE_SUBSCRIBED","closeCode":0,"closeReason":"","attempt":0}}
// and, last, the call's status:
//   {"status":{"code":N,"details":"...","errorInfo":{"reason":...,"domain":...,"metadata":{...}},
//              "retryInfo":{"retryDelayMs":N}}}
// errorInfo and retryInfo are decoded from the grpc-status-details-bin
// trailer (a google.rpc.Status) when present.
//
// Exit status: 0 when the call ended with OK, 1 with any other status, 2 on
// a usage or local error (message on stderr).

import path from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
// protobufjs as proto-loader itself resolves it (its dependency).
const protobuf = createRequire(require.resolve('@grpc/proto-loader'))('protobufjs');

function die(msg) {
  process.stderr.write(`grpc-client.mjs: ${msg}\n`);
  process.exit(2);
}

const usage = 'usage: node grpc-client.mjs ADDRESS UPSTREAM QUERY [VARIABLES_JSON] [--max-batch N]';
const args = process.argv.slice(2);
let maxBatch = 0;
const flag = args.indexOf('--max-batch');
if (flag >= 0) {
  maxBatch = Number(args[flag + 1]);
  if (!Number.isInteger(maxBatch) || maxBatch < 0) die(`--max-batch must be a whole number, got ${JSON.stringify(args[flag + 1])}`);
  args.splice(flag, 2);
}
const [address, upstream, query, variablesJSON] = args;
if (!address || !upstream || query === undefined) {
  die(usage);
}

const here = path.dirname(fileURLToPath(import.meta.url));
const repoProto = path.resolve(here, '..', '..', 'proto');

// google/protobuf/struct.proto (and any.proto, duration.proto below) are
// bundled with protobufjs, which resolves them before the include dirs: the
// only include dir needed is the repository's proto/.
const definition = protoLoader.loadSync('graphqlbridge/v1/subscription.proto', {
  includeDirs: [repoProto],
  longs: String, // uint64 sequence
  enums: String, // Lifecycle.State by name
  defaults: true,
  oneofs: true, // SubscribeResponse.event says which of next / lifecycle is set
});
const { SubscriptionService } = grpc.loadPackageDefinition(definition).graphqlbridge.v1;

// google.rpc.Status / ErrorInfo / RetryInfo are not shipped in node_modules:
// minimal copies live in ./proto.
const rpcRoot = new protobuf.Root();
rpcRoot.loadSync([path.join(here, 'proto', 'google', 'rpc', 'status.proto'),
  path.join(here, 'proto', 'google', 'rpc', 'error_details.proto')], { keepCase: true });
const RpcStatus = rpcRoot.lookupType('google.rpc.Status');
const ErrorInfo = rpcRoot.lookupType('google.rpc.ErrorInfo');
const RetryInfo = rpcRoot.lookupType('google.rpc.RetryInfo');

// JSON to google.protobuf.Struct, as proto-loader's object form wants it.
function toValue(v) {
  if (v === null) return { nullValue: 'NULL_VALUE' };
  switch (typeof v) {
    case 'number': return { numberValue: v };
    case 'string': return { stringValue: v };
    case 'boolean': return { boolValue: v };
  }
  if (Array.isArray(v)) return { listValue: { values: v.map(toValue) } };
  return { structValue: toStruct(v) };
}
function toStruct(o) {
  const fields = {};
  for (const [k, v] of Object.entries(o)) fields[k] = toValue(v);
  return { fields };
}

let variables;
if (variablesJSON) {
  let parsed;
  try {
    parsed = JSON.parse(variablesJSON);
  } catch (err) {
    die(`VARIABLES_JSON: ${err.message}`);
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) die('VARIABLES_JSON must be a JSON object');
  variables = toStruct(parsed);
}

function print(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

function decodeDetails(metadata) {
  const out = {};
  const [bin] = metadata?.get('grpc-status-details-bin') ?? [];
  if (!bin) return out;
  const st = RpcStatus.decode(bin);
  for (const any of st.details) {
    const type = any.type_url.slice(any.type_url.lastIndexOf('/') + 1);
    if (type === 'google.rpc.ErrorInfo') {
      const info = ErrorInfo.toObject(ErrorInfo.decode(any.value), { defaults: true });
      out.errorInfo = { reason: info.reason, domain: info.domain, metadata: info.metadata ?? {} };
    } else if (type === 'google.rpc.RetryInfo') {
      const ri = RetryInfo.toObject(RetryInfo.decode(any.value), { longs: Number, defaults: true });
      const d = ri.retry_delay ?? { seconds: 0, nanos: 0 };
      out.retryInfo = { retryDelayMs: d.seconds * 1000 + Math.round(d.nanos / 1e6) };
    }
  }
  return out;
}

const client = new SubscriptionService(address, grpc.credentials.createInsecure());
const call = client.Subscribe({ upstream, query, variables, maxBatch });

function printNext(n) {
  let result;
  try {
    result = JSON.parse(Buffer.from(n.result).toString('utf8'));
  } catch (err) {
    die(`result is not JSON: ${err.message}`);
  }
  print({ next: { sequence: Number(n.sequence), result } });
}

call.on('data', (resp) => {
  if (resp.event === 'next') {
    printNext(resp.next);
  } else if (resp.event === 'batch') {
    // A batch is the results queued together, in sequence order: handle
    // each as if it had come alone.
    print({ batch: { size: resp.batch.nexts.length } });
    for (const n of resp.batch.nexts) printNext(n);
  } else if (resp.event === 'lifecycle') {
    const l = resp.lifecycle;
    print({ lifecycle: { state: l.state, closeCode: l.closeCode, closeReason: l.closeReason, attempt: l.attempt } });
  } else {
    die(`unknown event ${JSON.stringify(resp)}`);
  }
});

// The status arrives with the end of the stream; print it after the last
// event, whichever of 'status' and 'end' comes last.
let status = null;
let ended = false;
let finished = false;
function finish() {
  if (finished || !status) return;
  finished = true;
  print({ status: { code: status.code, details: status.details, ...decodeDetails(status.metadata) } });
  client.close();
  process.exitCode = status.code === grpc.status.OK ? 0 : 1;
}
call.on('status', (s) => {
  status = s;
  if (ended) finish();
});
call.on('end', () => {
  ended = true;
  finish();
});
call.on('close', finish);
call.on('error', () => {}); // reported through 'status'
