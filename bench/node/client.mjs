// The reference graphql-ws client as a benchmark consumer: connects, runs
// one subscription, counts its results until complete and prints
// {"count":N,"seconds":S,"cpu_seconds":C} on stdout. Timing starts when the
// subscription is sent (the connection is already acknowledged), as for the
// Go consumers; C is the CPU the whole process (every thread) used over the
// same span, so start-up is not in it.
//
//   node client.mjs URL QUERY VARIABLES_JSON
import { createClient } from 'graphql-ws';
import WebSocket from 'ws';

const [url, query, vars] = process.argv.slice(2);
if (!url || !query) {
  console.error('usage: node client.mjs URL QUERY VARIABLES_JSON');
  process.exit(2);
}
const variables = vars ? JSON.parse(vars) : {};

let connected;
const ready = new Promise((resolve) => { connected = resolve; });
const client = createClient({
  url,
  webSocketImpl: WebSocket,
  lazy: false,
  retryAttempts: 0,
  on: { connected: () => connected() },
});

await ready;
let count = 0;
const cpu0 = process.cpuUsage();
const start = process.hrtime.bigint();
await new Promise((resolve, reject) => {
  client.subscribe({ query, variables }, {
    next: () => { count++; },
    error: reject,
    complete: resolve,
  });
});
const seconds = Number(process.hrtime.bigint() - start) / 1e9;
const cpu = process.cpuUsage(cpu0);
const cpuSeconds = (cpu.user + cpu.system) / 1e6;
await client.dispose();
process.stdout.write(JSON.stringify({ count, seconds, cpu_seconds: cpuSeconds }) + '\n');
process.exit(0);
