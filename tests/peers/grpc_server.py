"""A real gRPC server (Python grpcio, h2c) for the gateway's gRPC canary tests.

Usage: grpc_server.py PORT NAME [FAIL_CODE]

Service canary.Echo, raw bytes (no protobuf), every answer prefixed with NAME:
  Say   (unary)             -> b"NAME:" + request; with FAIL_CODE (a grpc.StatusCode
                               name) every call fails with it instead.
  Chat  (bidi streaming)    -> one b"NAME:" + message per message, as each arrives.
  Fail  (unary)             -> the status named in the request (e.g. b"NOT_FOUND").
"""

import sys
from concurrent import futures

import grpc

port, name = int(sys.argv[1]), sys.argv[2]
fail = getattr(grpc.StatusCode, sys.argv[3]) if len(sys.argv) > 3 else None
prefix = name.encode() + b":"


def say(request, context):
    if fail is not None:
        context.abort(fail, f"{name} is failing")
    context.set_trailing_metadata((("x-served-by", name),))
    return prefix + request


def chat(requests, context):
    for m in requests:
        yield prefix + m


def fail_with(request, context):
    context.abort(getattr(grpc.StatusCode, request.decode()), f"{name} was asked to fail")


handler = grpc.method_handlers_generic_handler(
    "canary.Echo",
    {
        "Say": grpc.unary_unary_rpc_method_handler(say),
        "Chat": grpc.stream_stream_rpc_method_handler(chat),
        "Fail": grpc.unary_unary_rpc_method_handler(fail_with),
    },
)
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port(f"127.0.0.1:{port}")
server.start()
print(f"listening on {port}", flush=True)
server.wait_for_termination()
