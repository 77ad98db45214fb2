"""Token authentication for the embedded Trainer.

Every call must carry ``authorization: Bearer <token>``; the token is random
per Trainer start and only readable by its owner (trainer.json, mode 0600).
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable

import grpc

MESSAGE = "missing or wrong token: send 'authorization: Bearer <token>' (DLAAS_TRAINER_TOKEN)"


async def _deny_unary(request, context: grpc.aio.ServicerContext):
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, MESSAGE)


async def _deny_stream(request, context: grpc.aio.ServicerContext):
    await context.abort(grpc.StatusCode.UNAUTHENTICATED, MESSAGE)
    yield  # pragma: no cover - makes this an async generator


class TokenInterceptor(grpc.aio.ServerInterceptor):
    def __init__(self, token: str) -> None:
        self._expected = f"Bearer {token}".encode()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        given = dict(details.invocation_metadata or ()).get("authorization", "")
        if hmac.compare_digest(given.encode(), self._expected):
            return handler
        if handler is None:
            return handler
        if handler.response_streaming:
            return grpc.unary_stream_rpc_method_handler(
                _deny_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.unary_unary_rpc_method_handler(
            _deny_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
