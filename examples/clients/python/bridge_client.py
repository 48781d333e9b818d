"""A gqlbridge caller for Python with grpcio: subscribe, and resubscribe after
a stream end exactly as docs/status.md says (the "retry?" column is
retryable() below). The same policy as the Go package client/.

Needs grpcio and protobuf (Debian: python3-grpcio python3-protobuf; pip:
grpcio protobuf). The message classes come from a FileDescriptorSet of the
bridge's proto/ (for example `buf build proto -o bridge.binpb`, or
`protoc --include_imports --descriptor_set_out=bridge.binpb -Iproto
graphqlbridge/v1/subscription.proto`), so no generated code is needed. With
grpcio-tools you could generate stubs instead; the loop below stays the same.
"""

import json
import random
import threading
import time

import grpc
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, json_format, message_factory

SERVICE = "graphqlbridge.v1.SubscriptionService"

# The recommended channel options: round robin over every address the target
# resolves to (every replica behind the headless Service), client-side health
# checking (a draining replica reports NOT_SERVING and gets no new streams),
# and keepalive pings every 30 s (the bridge accepts one every 10 s at most).
SERVICE_CONFIG = {
    "loadBalancingConfig": [{"round_robin": {}}],
    "healthCheckConfig": {"serviceName": SERVICE},
}
CHANNEL_OPTIONS = [
    ("grpc.service_config", json.dumps(SERVICE_CONFIG)),
    ("grpc.keepalive_time_ms", 30000),
    ("grpc.keepalive_timeout_ms", 10000),
    ("grpc.keepalive_permit_without_calls", 1),
]

# The resubscribe policy, as the Go client's DefaultRetry: before the nth
# retry since the subscription was last live, wait the RetryInfo delay plus a
# random delay between 0 and min(initial * 2**(n-1), max); give up after
# max_attempts retries (0: no limit) or when the subscription would stay down
# longer than max_elapsed seconds (0: no limit).
DEFAULT_RETRY = {"initial": 0.1, "max": 30.0, "max_attempts": 0, "max_elapsed": 300.0}

_F = descriptor_pb2.FieldDescriptorProto


def _rpc_file():
    """google.rpc.Status, ErrorInfo and RetryInfo, to read the
    grpc-status-details-bin trailer."""
    f = descriptor_pb2.FileDescriptorProto(
        name="gqlbridge_example/google_rpc.proto", package="google.rpc", syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/duration.proto"])
    st = f.message_type.add(name="Status")
    st.field.add(name="code", number=1, type=_F.TYPE_INT32, label=_F.LABEL_OPTIONAL)
    st.field.add(name="message", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    st.field.add(name="details", number=3, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                 type_name=".google.protobuf.Any")
    ei = f.message_type.add(name="ErrorInfo")
    ei.field.add(name="reason", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    ei.field.add(name="domain", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry = ei.nested_type.add(name="MetadataEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    ei.field.add(name="metadata", number=3, type=_F.TYPE_MESSAGE, label=_F.LABEL_REPEATED,
                 type_name=".google.rpc.ErrorInfo.MetadataEntry")
    ri = f.message_type.add(name="RetryInfo")
    ri.field.add(name="retry_delay", number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                 type_name=".google.protobuf.Duration")
    return f


def _message_class(desc):
    if hasattr(message_factory, "GetMessageClass"):  # protobuf >= 4.22
        return message_factory.GetMessageClass(desc)
    return message_factory.MessageFactory(desc.file.pool).GetPrototype(desc)


class Messages:
    """The bridge's message classes, from a FileDescriptorSet file."""

    def __init__(self, descriptor_set_path):
        with open(descriptor_set_path, "rb") as f:
            fds = descriptor_pb2.FileDescriptorSet.FromString(f.read())
        pool = descriptor_pool.DescriptorPool()
        added = set()

        def add(fdp):
            if fdp.name not in added:
                pool.Add(fdp)
                added.add(fdp.name)

        for wkt in (any_pb2, duration_pb2):
            fdp = descriptor_pb2.FileDescriptorProto()
            wkt.DESCRIPTOR.CopyToProto(fdp)
            if fdp.name not in {x.name for x in fds.file}:
                add(fdp)
        for fdp in fds.file:  # dependencies come first in a set built with imports
            add(fdp)
        add(_rpc_file())

        def cls(name):
            return _message_class(pool.FindMessageTypeByName(name))

        self.SubscribeRequest = cls("graphqlbridge.v1.SubscribeRequest")
        self.SubscribeResponse = cls("graphqlbridge.v1.SubscribeResponse")
        self.Status = cls("google.rpc.Status")
        self.ErrorInfo = cls("google.rpc.ErrorInfo")
        self.RetryInfo = cls("google.rpc.RetryInfo")

    def request(self, upstream, query, variables=None, operation_name="", max_batch=0):
        """A SubscribeRequest; variables is a dict (a JSON object)."""
        req = {"upstream": upstream, "query": query, "operationName": operation_name, "maxBatch": max_batch}
        if variables is not None:
            req["variables"] = variables
        return json_format.ParseDict(req, self.SubscribeRequest())

    def details(self, err):
        """The ErrorInfo ({reason, domain, metadata}) and RetryInfo
        ({retry_delay_ms}) of a finished call, each None when absent."""
        error_info = retry_info = None
        for key, value in err.trailing_metadata() or ():
            if key != "grpc-status-details-bin":
                continue
            for d in self.Status.FromString(value).details:
                kind = d.type_url.rsplit("/", 1)[-1]
                if kind == "google.rpc.ErrorInfo":
                    e = self.ErrorInfo.FromString(d.value)
                    error_info = {"reason": e.reason, "domain": e.domain, "metadata": dict(e.metadata)}
                elif kind == "google.rpc.RetryInfo":
                    r = self.RetryInfo.FromString(d.value)
                    ms = r.retry_delay.seconds * 1000 + round(r.retry_delay.nanos / 1e6)
                    retry_info = {"retry_delay_ms": ms}
        return error_info, retry_info


def retryable(code, error_info, retry_info):
    """The "retry?" column of docs/status.md: whether to subscribe again after
    a stream ended with code, and the least delay (seconds) the bridge asked
    for.

    - RetryInfo present (UNAVAILABLE BRIDGE_DRAINING or UPSTREAM_UNAVAILABLE,
      RESOURCE_EXHAUSTED LIMIT_REACHED): yes, after at least its delay;
    - any other status from the bridge (it carries ErrorInfo): no;
    - UNAVAILABLE, UNKNOWN, INTERNAL from gRPC itself (no ErrorInfo: the
      connection to the replica broke, a proxy failed): yes, with backoff;
    - anything else: no.
    """
    if retry_info is not None:
        return True, max(0, retry_info["retry_delay_ms"]) / 1000
    if error_info is not None:
        return False, 0
    return code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL), 0


class Subscription:
    """Runs one subscription until it completes, is cancelled, or ends in a
    way resubscribing will not fix.

    handler is an object with any of these methods, called in order on the
    thread that runs run():
      on_result(data: bytes, sequence: int, stream: int)   batches unrolled
      on_lifecycle(lifecycle)                             the Lifecycle message
      on_retry(info: dict)   code, message, error_info, retry_info, delay, attempt, stream
      on_resubscribed(info: dict)   stream, down (seconds), attempts
    (grpcio does not tell which replica serves a call, so unlike the Go and
    Node clients there is no peer.)
    """

    def __init__(self, channel, messages, request, handler, retry=None):
        self._subscribe = channel.unary_stream(
            "/" + SERVICE + "/Subscribe",
            request_serializer=messages.SubscribeRequest.SerializeToString,
            response_deserializer=messages.SubscribeResponse.FromString)
        self._messages = messages
        self._request = request
        self._handler = handler
        self._retry = dict(DEFAULT_RETRY, **(retry or {}))
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._call = None

    def cancel(self):
        self._stop.set()
        with self._lock:
            if self._call is not None:
                self._call.cancel()

    def _emit(self, name, *args):
        fn = getattr(self._handler, name, None)
        if fn is not None:
            fn(*args)

    def run(self):
        """Returns {"ok": True} when the upstream completed the operation,
        {"cancelled": True} after cancel(), otherwise {"ok": False, "code",
        "message", "error_info", "retry_info", "gave_up", "attempts"}."""
        streams = 0
        failures = 0  # retryable ends since the subscription was last live
        down_since = time.monotonic()
        while not self._stop.is_set():
            streams += 1
            delivered = False
            with self._lock:
                if self._stop.is_set():
                    break
                call = self._call = self._subscribe(self._request)
            try:
                for resp in call:
                    if not delivered:
                        delivered = True
                        if failures:
                            self._emit("on_resubscribed", {"stream": streams, "down": time.monotonic() - down_since,
                                                           "attempts": failures})
                    kind = resp.WhichOneof("event")
                    if kind == "next":
                        self._emit("on_result", resp.next.result, resp.next.sequence, streams)
                    elif kind == "batch":
                        for n in resp.batch.nexts:
                            self._emit("on_result", n.result, n.sequence, streams)
                    elif kind == "lifecycle":
                        self._emit("on_lifecycle", resp.lifecycle)
                return {"ok": True}
            except grpc.RpcError as err:
                if self._stop.is_set():
                    return {"cancelled": True}
                code, message = err.code(), err.details()
                error_info, retry_info = self._messages.details(err)
            if delivered:
                failures, down_since = 0, time.monotonic()
            failures += 1
            again, after = retryable(code, error_info, retry_info)
            end = {"ok": False, "code": code.value[0], "message": message, "error_info": error_info,
                   "retry_info": retry_info, "gave_up": again, "attempts": failures}
            if not again:
                return end
            r = self._retry
            delay = after + random.uniform(0, min(r["initial"] * 2 ** (failures - 1), r["max"]))
            if (r["max_attempts"] and failures > r["max_attempts"]) or (
                    r["max_elapsed"] and time.monotonic() - down_since + delay > r["max_elapsed"]):
                return end
            self._emit("on_retry", {"code": code.value[0], "message": message, "error_info": error_info,
                                    "retry_info": retry_info, "delay": delay, "attempt": failures,
                                    "stream": streams})
            self._stop.wait(delay)
        return {"cancelled": True}
