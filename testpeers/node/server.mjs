#!/usr/bin/env node
// Reference GraphQL-over-WebSocket test peer for gqlbridge.
//
// Speaks exactly one subprotocol, using the reference library for it:
//   --protocol graphql-transport-ws  -> graphql-ws (useServer on a ws WebSocketServer)
//   --protocol graphql-ws            -> subscriptions-transport-ws (SubscriptionServer.create)
//
// Everything protocol related (frames, acks, errors, close codes) is left to the
// libraries; this file only supplies the schema, auth hooks and a control API.
//
// Usage:
//   node server.mjs --protocol graphql-transport-ws|graphql-ws [--token T]
//        [--token-ttl-ms N] [--expiry-close-code C] [--close-after-results N]
//        [--reject-subscribe-from K] [--keep-alive-ms N] [--port 0]
//
// On readiness prints one JSON line to stdout:
//   {"url":"ws://127.0.0.1:PORT/graphql","control":"http://127.0.0.1:PORT"}
// Exits on stdin EOF and on SIGTERM/SIGINT.

import http from 'node:http';
import { parseArgs } from 'node:util';
import { createRequire } from 'node:module';
import {
  GraphQLSchema,
  GraphQLObjectType,
  GraphQLString,
  GraphQLInt,
  GraphQLNonNull,
  GraphQLError,
  execute,
  subscribe,
} from 'graphql';

const require = createRequire(import.meta.url);

const PROTO_TRANSPORT = 'graphql-transport-ws';
const PROTO_LEGACY = 'graphql-ws';
const WS_PATH = '/graphql';

// ---------------------------------------------------------------------------
// Flags

function fail(msg) {
  process.stderr.write(`server.mjs: ${msg}\n`);
  process.exit(2);
}

let flags;
try {
  flags = parseArgs({
    options: {
      protocol: { type: 'string' },
      token: { type: 'string' },
      'token-ttl-ms': { type: 'string' },
      'expiry-close-code': { type: 'string' },
      'close-after-results': { type: 'string' },
      'reject-subscribe-from': { type: 'string' },
      'keep-alive-ms': { type: 'string' },
      port: { type: 'string' },
    },
    strict: true,
  }).values;
} catch (err) {
  fail(err.message);
}

function intFlag(name, def) {
  const v = flags[name];
  if (v === undefined || v === '') return def;
  const n = Number(v);
  if (!Number.isInteger(n)) fail(`--${name} must be an integer, got ${JSON.stringify(v)}`);
  return n;
}

const protocol = flags.protocol;
if (protocol !== PROTO_TRANSPORT && protocol !== PROTO_LEGACY) {
  fail(`--protocol must be ${PROTO_TRANSPORT} or ${PROTO_LEGACY}, got ${JSON.stringify(protocol)}`);
}
let acceptedToken = flags.token ?? '';
const tokenTTLms = intFlag('token-ttl-ms', 0);
const expiryCloseCode = intFlag('expiry-close-code', 4401);
const closeAfterResults = intFlag('close-after-results', 0);
const rejectSubscribeFrom = intFlag('reject-subscribe-from', 0);
const keepAliveMs = intFlag('keep-alive-ms', 0);
const port = intFlag('port', 0);

function log(...args) {
  process.stderr.write(`[${protocol}] ${args.join(' ')}\n`);
}

// ---------------------------------------------------------------------------
// Stats

const stats = {
  inits: 0,
  rejected: 0,
  started: 0,
  ended: 0,
  active: 0,
  initPayloads: [],
  subscribeIds: [],
  closes: [],
};
const sockets = new Set();
// The connection_init payload of each socket, for the close records.
const socketParams = new WeakMap();

function pushBounded(list, value, max) {
  list.push(value);
  while (list.length > max) list.shift();
}

function recordInit(payload, socket) {
  stats.inits++;
  pushBounded(stats.initPayloads, payload === undefined ? null : payload, 20);
  socketParams.set(socket, payload === undefined ? null : payload);
}

function recordSubscribeId(id) {
  pushBounded(stats.subscribeIds, String(id), 100);
}

// ---------------------------------------------------------------------------
// Event streams. Hand-rolled async iterators (rather than `async function*`)
// so that return() takes effect at once even while a tick is pending: an
// async generator queues return() behind its in-flight await.

function trackedStream(produce) {
  // produce(emit) is called once per next(); it resolves with a value, with
  // DONE, or rejects. It may register a cancel function via onCancel.
  stats.started++;
  stats.active++;
  let finished = false;
  let cancel = null;
  let pendingResolve = null;

  const finish = () => {
    if (finished) return;
    finished = true;
    stats.active--;
    stats.ended++;
    if (cancel) cancel();
    cancel = null;
    if (pendingResolve) {
      const r = pendingResolve;
      pendingResolve = null;
      r({ value: undefined, done: true });
    }
  };

  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    next() {
      if (finished) return Promise.resolve({ value: undefined, done: true });
      return new Promise((resolve, reject) => {
        pendingResolve = resolve;
        produce({
          value: (v) => {
            if (pendingResolve !== resolve) return;
            pendingResolve = null;
            cancel = null;
            resolve({ value: v, done: false });
          },
          done: () => {
            if (pendingResolve !== resolve) return;
            finish();
          },
          error: (err) => {
            if (pendingResolve !== resolve) return;
            pendingResolve = null;
            finish();
            reject(err);
          },
          onCancel: (fn) => {
            cancel = fn;
          },
        });
      });
    },
    return(value) {
      finish();
      return Promise.resolve({ value, done: true });
    },
    throw(err) {
      finish();
      return Promise.reject(err);
    },
  };
}

function tickerStream({ count, intervalMs, size }) {
  let n = 0;
  const payload = size > 0 ? 'x'.repeat(size) : null;
  const delay = Math.max(0, intervalMs);
  return trackedStream((emit) => {
    if (count > 0 && n >= count) {
      emit.done();
      return;
    }
    const timer = setTimeout(() => {
      n++;
      emit.value({ ticker: { n, at: new Date().toISOString(), payload } });
    }, delay);
    emit.onCancel(() => clearTimeout(timer));
  });
}

function failingStream({ message }) {
  // Fails before the first event. Both libraries turn an error thrown by the
  // event stream into an operation-level `error` message.
  return trackedStream((emit) => emit.error(new Error(message)));
}

function completeImmediatelyStream() {
  return trackedStream((emit) => emit.done());
}

// ---------------------------------------------------------------------------
// Schema:
//   type Query { hello(name: String): String! }
//   type Subscription {
//     ticker(count: Int = 10, intervalMs: Int = 100, size: Int = 0): Tick!
//     failing(message: String = "boom"): Tick!
//     completeImmediately: Tick!
//   }
//   type Tick { n: Int!, at: String!, payload: String }

const Tick = new GraphQLObjectType({
  name: 'Tick',
  fields: {
    n: { type: new GraphQLNonNull(GraphQLInt) },
    at: { type: new GraphQLNonNull(GraphQLString) },
    payload: { type: GraphQLString },
  },
});

const schema = new GraphQLSchema({
  query: new GraphQLObjectType({
    name: 'Query',
    fields: {
      hello: {
        type: new GraphQLNonNull(GraphQLString),
        args: { name: { type: GraphQLString } },
        resolve: (_src, { name }) => `Hello, ${name ?? 'world'}!`,
      },
    },
  }),
  subscription: new GraphQLObjectType({
    name: 'Subscription',
    fields: {
      ticker: {
        type: new GraphQLNonNull(Tick),
        args: {
          count: { type: GraphQLInt, defaultValue: 10 },
          intervalMs: { type: GraphQLInt, defaultValue: 100 },
          size: { type: GraphQLInt, defaultValue: 0 },
        },
        subscribe: (_src, args) => tickerStream(args),
        resolve: (event) => event.ticker,
      },
      failing: {
        type: new GraphQLNonNull(Tick),
        args: { message: { type: GraphQLString, defaultValue: 'boom' } },
        subscribe: (_src, args) => failingStream(args),
        resolve: (event) => event,
      },
      completeImmediately: {
        type: new GraphQLNonNull(Tick),
        subscribe: () => completeImmediatelyStream(),
        resolve: (event) => event,
      },
    },
  }),
});

// ---------------------------------------------------------------------------
// Auth helpers

function authorized(payload) {
  if (!acceptedToken) return true;
  if (!payload || typeof payload !== 'object') return false;
  const header = payload.Authorization ?? payload.authorization;
  return header === `Bearer ${acceptedToken}`;
}

// Schedules the token-expiry close for an accepted connection.
function armExpiry(socket) {
  if (tokenTTLms <= 0) return;
  const timer = setTimeout(() => {
    log(`token expired, closing with ${expiryCloseCode}`);
    try {
      socket.close(expiryCloseCode, 'token expired');
    } catch (err) {
      log(`expiry close failed: ${err.message}`);
    }
  }, tokenTTLms);
  socket.once('close', () => clearTimeout(timer));
}

// Numbers the accepted connections from 1 (rejected inits are not counted).
let acceptedCount = 0;
const acceptedNumber = new WeakMap();

// Called once a connection_init is accepted: numbers the connection, and
// arms the token expiry and the close after --close-after-results results.
function accepted(socket) {
  acceptedNumber.set(socket, ++acceptedCount);
  armExpiry(socket);
  watchResults(socket);
}

// With --close-after-results N, closes the connection with
// --expiry-close-code and reason "token expired" right after it sent its
// Nth result (next or data, whichever operation it belongs to): the token
// was good, and expired while results were flowing. The results go out
// through the library's own socket.send; this only watches them.
function watchResults(socket) {
  if (closeAfterResults <= 0) return;
  const send = socket.send.bind(socket);
  let results = 0;
  socket.send = (data, ...rest) => {
    const open = socket.readyState === socket.OPEN;
    send(data, ...rest);
    if (!open) return;
    let type;
    try {
      type = JSON.parse(String(data)).type;
    } catch {
      return;
    }
    if ((type === 'next' || type === 'data') && ++results === closeAfterResults) {
      log(`${results} results sent, closing with ${expiryCloseCode}`);
      socket.close(expiryCloseCode, 'token expired');
    }
  };
}

// With --reject-subscribe-from K, the Kth accepted connection and every
// later one close with 4403 Forbidden on their first subscribe: an upstream
// that acknowledges the credential and refuses every operation with it.
function rejectsSubscribe(socket) {
  const n = acceptedNumber.get(socket);
  if (rejectSubscribeFrom <= 0 || n === undefined || n < rejectSubscribeFrom) return false;
  log(`connection ${n}: subscribe refused, closing with 4403`);
  socket.close(4403, 'Forbidden');
  return true;
}

// ---------------------------------------------------------------------------
// HTTP server + control API

function sendJSON(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) });
  res.end(data);
}

function handleControl(req, res) {
  const url = new URL(req.url, 'http://127.0.0.1');
  const route = `${req.method} ${url.pathname}`;
  switch (route) {
    case 'GET /stats':
      return sendJSON(res, 200, {
        connections: sockets.size,
        open: [...sockets].filter((ws) => socketParams.has(ws)).map((ws) => socketParams.get(ws)),
        closes: stats.closes,
        active: stats.active,
        started: stats.started,
        ended: stats.ended,
        inits: stats.inits,
        rejected: stats.rejected,
        initPayloads: stats.initPayloads,
        subscribeIds: stats.subscribeIds,
      });
    case 'POST /close-all': {
      const code = Number(url.searchParams.get('code') ?? '1000');
      const reason = url.searchParams.get('reason') ?? '';
      let closed = 0;
      try {
        for (const ws of sockets) {
          ws.close(code, reason);
          closed++;
        }
      } catch (err) {
        return sendJSON(res, 400, { error: err.message, closed });
      }
      log(`close-all code=${code} reason=${JSON.stringify(reason)} closed=${closed}`);
      return sendJSON(res, 200, { closed });
    }
    case 'POST /drop-all': {
      let dropped = 0;
      for (const ws of sockets) {
        // terminate() destroys the TCP socket without a close frame.
        ws.terminate();
        dropped++;
      }
      log(`drop-all dropped=${dropped}`);
      return sendJSON(res, 200, { dropped });
    }
    case 'POST /token': {
      acceptedToken = url.searchParams.get('value') ?? '';
      log(`accepted token changed (${acceptedToken ? 'set' : 'cleared'})`);
      return sendJSON(res, 200, { ok: true });
    }
    default:
      return sendJSON(res, 404, { error: `no route ${route}` });
  }
}

const httpServer = http.createServer(handleControl);

// Records every socket's end: the close code the client sent (1006 when the
// connection ended without a close frame), its reason, and the socket's
// connection_init payload (null when it sent none).
function trackSocket(ws) {
  sockets.add(ws);
  ws.once('close', (code, reason) => {
    sockets.delete(ws);
    pushBounded(stats.closes, { code, reason: String(reason ?? ''), params: socketParams.get(ws) ?? null }, 5000);
  });
}

if (protocol === PROTO_TRANSPORT) {
  const { WebSocketServer } = await import('ws');
  const { useServer } = await import('graphql-ws/use/ws');
  const wss = new WebSocketServer({ server: httpServer, path: WS_PATH });
  wss.on('connection', trackSocket);
  useServer(
    {
      schema,
      onConnect: (ctx) => {
        const payload = ctx.connectionParams;
        recordInit(payload, ctx.extra.socket);
        if (!authorized(payload)) {
          stats.rejected++;
          log('connection_init rejected (bad or missing token)');
          return false; // library closes with 4403 Forbidden
        }
        accepted(ctx.extra.socket);
        return true;
      },
      onSubscribe: (ctx, id) => {
        recordSubscribeId(id);
        if (rejectsSubscribe(ctx.extra.socket)) {
          return [new GraphQLError('Forbidden')]; // not sent: the socket is closing
        }
        return undefined; // let the library parse/validate/execute
      },
    },
    wss,
    keepAliveMs > 0 ? keepAliveMs : undefined,
  );
} else {
  const { SubscriptionServer } = require('subscriptions-transport-ws');
  const subscriptionServer = SubscriptionServer.create(
    {
      schema,
      execute,
      subscribe,
      keepAlive: keepAliveMs > 0 ? keepAliveMs : undefined,
      onConnect: (payload, socket) => {
        recordInit(payload, socket);
        if (!authorized(payload)) {
          stats.rejected++;
          log('connection_init rejected (bad or missing token)');
          // library sends connection_error {message} and closes (1011)
          throw new Error('Unauthorized: invalid or missing token');
        }
        accepted(socket);
        return {};
      },
      onOperation: (message, params, socket) => {
        recordSubscribeId(message.id);
        if (rejectsSubscribe(socket)) {
          // Fails the operation without running it (the library's error
          // message is not sent: the socket is closing).
          return Promise.reject(new Error('Forbidden'));
        }
        return params;
      },
    },
    { server: httpServer, path: WS_PATH },
  );
  subscriptionServer.server.on('connection', trackSocket);
}

// ---------------------------------------------------------------------------
// Lifecycle

let exiting = false;
function shutdown(why) {
  if (exiting) return;
  exiting = true;
  log(`exiting: ${why}`);
  process.exit(0);
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
process.stdin.on('end', () => shutdown('stdin EOF'));
process.stdin.on('error', () => shutdown('stdin error'));
process.stdin.resume();

httpServer.on('error', (err) => fail(`listen: ${err.message}`));
httpServer.listen({ host: '127.0.0.1', port }, () => {
  const { port: actual } = httpServer.address();
  process.stdout.write(
    JSON.stringify({ url: `ws://127.0.0.1:${actual}${WS_PATH}`, control: `http://127.0.0.1:${actual}` }) + '\n',
  );
  log(`listening on 127.0.0.1:${actual}`);
});
