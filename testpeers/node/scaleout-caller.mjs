#!/usr/bin/env node
// Many resubscribing callers of gqlbridge in one Node process, for the
// multi-replica test (scaleout/). Each subscription runs through
// examples/clients/node/bridge-client.cjs (@grpc/grpc-js, round robin over
// the target's addresses, resubscribe as docs/status.md says).
//
// Usage (NODE_PATH must reach this directory's node_modules, since
// bridge-client.cjs lives outside it):
//   NODE_PATH=testpeers/node/node_modules \
//   node scaleout-caller.mjs TARGET UPSTREAM QUERY COUNT FIRST [WARM_UP_QUERY]
//
// Subscription k (0 <= k < COUNT) sends QUERY with variables {"i": FIRST+k}.
// With WARM_UP_QUERY (one that completes at once) and an ipv4: target, the
// caller first runs it until every address of the target has served it:
// round robin then spreads the subscriptions over all of them, instead of
// sending them all to the first replica it connected to.
// Prints one JSON line per event, each with the time of the event (ms since
// the epoch) and the subscription's number:
//   {"at":T,"sub":k,"result":{"stream":1,"sequence":1,"peer":"127.0.0.1:P"}}
//   {"at":T,"sub":k,"retry":{"code":14,"reason":"BRIDGE_DRAINING","retryDelayMs":412,"delayMs":455,"attempt":1,"stream":1,"peer":"..."}}
//   {"at":T,"sub":k,"resubscribed":{"stream":2,"downMs":530,"attempts":1,"peer":"..."}}
//   {"at":T,"sub":k,"end":{"cancelled":true}}   (or {"ok":...,"code":...,"reason":...})
// When stdin ends it cancels every subscription, prints their ends and exits
// 0.

import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(import.meta.url);
const here = path.dirname(fileURLToPath(import.meta.url));
const { newClient, subscribe, toStruct } = require(path.join(here, '..', '..', 'examples', 'clients', 'node', 'bridge-client.cjs'));

const [target, upstream, query, countArg, firstArg, warmUpQuery] = process.argv.slice(2);
const count = Number(countArg);
const first = Number(firstArg);
if (!target || !upstream || !query || !Number.isInteger(count) || !Number.isInteger(first)) {
  process.stderr.write('usage: node scaleout-caller.mjs TARGET UPSTREAM QUERY COUNT FIRST\n');
  process.exit(2);
}

// Every line carries the time of its event, ms since the epoch.
const print = (o) => process.stdout.write(JSON.stringify({ at: Date.now(), ...o }) + '\n');
const client = newClient(target);

if (warmUpQuery && target.startsWith('ipv4:')) {
  const want = target.slice('ipv4:'.length).split(',').length;
  const seen = new Set();
  for (let i = 0; seen.size < want; i++) {
    if (i === 1000) {
      process.stderr.write(`warm-up: ${seen.size} of ${want} addresses served ${i} calls\n`);
      process.exit(1);
    }
    const peer = await new Promise((resolve) => {
      const call = client.Subscribe({ upstream, query: warmUpQuery });
      let p = '';
      call.on('data', () => { p = call.getPeer(); });
      call.on('error', () => {});
      call.on('status', () => resolve(p));
    });
    if (peer) seen.add(peer);
    else await new Promise((r) => setTimeout(r, 10)); // not connected yet
  }
}

const subs = [];
for (let k = 0; k < count; k++) {
  subs.push(subscribe(client, { upstream, query, variables: toStruct({ i: first + k }) }, {
    onResult: (r) => print({ sub: k, result: { stream: r.stream, sequence: r.sequence, peer: r.peer } }),
    onRetry: (r) => print({
      sub: k,
      retry: {
        code: r.code, reason: r.errorInfo?.reason ?? null, retryDelayMs: r.retryInfo?.retryDelayMs ?? null,
        delayMs: r.delayMs, attempt: r.attempt, stream: r.stream, peer: r.peer,
      },
    }),
    onResubscribed: (r) => print({ sub: k, resubscribed: r }),
  }));
  subs[k].done.then(({ errorInfo, retryInfo, ...end }) => print({ sub: k, end: errorInfo ? { ...end, reason: errorInfo.reason } : end }));
}

process.stdin.on('end', async () => {
  for (const s of subs) s.cancel();
  await Promise.all(subs.map((s) => s.done));
  client.close();
  // Let the 'end' lines printed by the done handlers above go out first.
  setImmediate(() => process.exit(0));
});
process.stdin.resume();
