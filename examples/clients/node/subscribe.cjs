#!/usr/bin/env node
'use strict';
// Subscribes through gqlbridge and stays subscribed across replica drains,
// rollouts and crashes (bridge-client.cjs does the resubscribing).
//
// Usage:
//   node subscribe.cjs TARGET UPSTREAM QUERY [VARIABLES_JSON] [--max-batch N]
//
// TARGET is a gRPC target: dns:///gqlbridge-headless.NS.svc.cluster.local:50051,
// or a list such as ipv4:127.0.0.1:50051,127.0.0.1:50052.
//
// Prints one JSON line per event on stdout:
//   {"result":{"stream":1,"sequence":1,"peer":"127.0.0.1:50051","data":{...}}}
//   {"lifecycle":{"state":"STATE_SUBSCRIBED",...}}
//   {"retry":{"code":14,"reason":"BRIDGE_DRAINING","retryDelayMs":412,"delayMs":455.2,"attempt":1,"stream":1,"peer":"..."}}
//   {"resubscribed":{"stream":2,"downMs":530,"attempts":1,"peer":"..."}}
// and last {"end":{...}}: {"ok":true} when the upstream completed the
// operation, {"cancelled":true} after SIGTERM or SIGINT, otherwise the
// status {"ok":false,"code":N,"message":...,"reason":...,"gaveUp":...}.
// Exit status: 0 for ok or cancelled, 1 otherwise, 2 on a usage error.

const { newClient, subscribe, toStruct } = require('./bridge-client.cjs');

const args = process.argv.slice(2);
let maxBatch = 0;
const i = args.indexOf('--max-batch');
if (i >= 0) {
  maxBatch = Number(args[i + 1]);
  args.splice(i, 2);
}
const [target, upstream, query, variablesJSON] = args;
if (!target || !upstream || !query || !Number.isInteger(maxBatch) || maxBatch < 0) {
  process.stderr.write('usage: node subscribe.cjs TARGET UPSTREAM QUERY [VARIABLES_JSON] [--max-batch N]\n');
  process.exit(2);
}
const print = (o) => process.stdout.write(JSON.stringify(o) + '\n');

const client = newClient(target);
const sub = subscribe(client, {
  upstream,
  query,
  variables: variablesJSON ? toStruct(JSON.parse(variablesJSON)) : undefined,
  maxBatch,
}, {
  onResult: (r) => print({ result: { stream: r.stream, sequence: r.sequence, peer: r.peer, data: JSON.parse(r.data.toString('utf8')) } }),
  onLifecycle: (l) => print({ lifecycle: l }),
  onRetry: (r) => print({
    retry: {
      code: r.code, reason: r.errorInfo?.reason ?? null, retryDelayMs: r.retryInfo?.retryDelayMs ?? null,
      delayMs: r.delayMs, attempt: r.attempt, stream: r.stream, peer: r.peer,
    },
  }),
  onResubscribed: (r) => print({ resubscribed: r }),
});
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => sub.cancel());

sub.done.then((end) => {
  const { errorInfo, retryInfo, ...rest } = end;
  print({ end: errorInfo ? { ...rest, reason: errorInfo.reason } : rest });
  client.close();
  process.exitCode = end.ok || end.cancelled ? 0 : 1;
});
