#!/usr/bin/env python3
"""Subscribes through gqlbridge and stays subscribed across replica drains,
rollouts and crashes (bridge_client.py does the resubscribing).

Usage:
  python3 subscribe.py --descriptors bridge.binpb TARGET UPSTREAM QUERY [VARIABLES_JSON] [--max-batch N]

TARGET is a gRPC target: dns:///gqlbridge-headless.NS.svc.cluster.local:50051,
or a list such as ipv4:127.0.0.1:50051,127.0.0.1:50052. bridge.binpb is a
FileDescriptorSet of the bridge's proto/ (`buf build proto -o bridge.binpb`).

Prints one JSON line per event on stdout, as examples/clients/node/subscribe.cjs
(without "peer": grpcio does not tell which replica serves a call):
  {"result":{"stream":1,"sequence":1,"data":{...}}}
  {"lifecycle":{"state":"STATE_SUBSCRIBED",...}}
  {"retry":{"code":14,"reason":"BRIDGE_DRAINING","retryDelayMs":412,"delayMs":455.2,"attempt":1,"stream":1}}
  {"resubscribed":{"stream":2,"downMs":530.1,"attempts":1}}
and last {"end":{...}}: {"ok":true} when the upstream completed the
operation, {"cancelled":true} after SIGTERM or SIGINT, otherwise the status
{"ok":false,"code":N,"message":...,"reason":...,"gaveUp":...}.
Exit status: 0 for ok or cancelled, 1 otherwise, 2 on a usage error.
"""

import argparse
import json
import signal
import sys
import threading

import grpc
from google.protobuf import json_format

import bridge_client


def main():
    p = argparse.ArgumentParser(description="Subscribe through gqlbridge, resubscribing after a drain.")
    p.add_argument("--descriptors", required=True, help="FileDescriptorSet of the bridge's proto/")
    p.add_argument("--max-batch", type=int, default=0)
    p.add_argument("target")
    p.add_argument("upstream")
    p.add_argument("query")
    p.add_argument("variables", nargs="?")
    args = p.parse_args()

    out_lock = threading.Lock()

    def emit(obj):
        with out_lock:
            sys.stdout.write(json.dumps(obj) + "\n")
            sys.stdout.flush()

    class Printer:
        def on_result(self, data, sequence, stream):
            emit({"result": {"stream": stream, "sequence": sequence, "data": json.loads(data)}})

        def on_lifecycle(self, lifecycle):
            emit({"lifecycle": json_format.MessageToDict(lifecycle)})

        def on_retry(self, r):
            emit({"retry": {"code": r["code"], "reason": (r["error_info"] or {}).get("reason"),
                            "retryDelayMs": (r["retry_info"] or {}).get("retry_delay_ms"),
                            "delayMs": r["delay"] * 1000, "attempt": r["attempt"], "stream": r["stream"]}})

        def on_resubscribed(self, r):
            emit({"resubscribed": {"stream": r["stream"], "downMs": r["down"] * 1000, "attempts": r["attempts"]}})

    messages = bridge_client.Messages(args.descriptors)
    request = messages.request(args.upstream, args.query,
                               json.loads(args.variables) if args.variables else None, max_batch=args.max_batch)
    with grpc.insecure_channel(args.target, options=bridge_client.CHANNEL_OPTIONS) as channel:
        sub = bridge_client.Subscription(channel, messages, request, Printer())
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: sub.cancel())
        result = {}
        worker = threading.Thread(target=lambda: result.update(sub.run()))
        worker.start()
        worker.join()
    end = dict(result)
    if "error_info" in end:
        end["reason"] = (end.pop("error_info") or {}).get("reason")
        end["gaveUp"] = end.pop("gave_up")
        end.pop("retry_info", None)
    emit({"end": end})
    return 0 if end.get("ok") or end.get("cancelled") else 1


if __name__ == "__main__":
    sys.exit(main())
