"""The OpenAI-compatible server: FastAPI routes over AsyncLLM.

    vllm serve [MODEL] --port 8000
    python -m vllm.entrypoints.openai.api_server --model MODEL
"""
# No `from __future__ import annotations`: FastAPI reads the route annotations,
# and the request models are imported inside build_app.

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys

from vllm import envs
from vllm.entrypoints.openai.limits import MAX_JSON_DEPTH, json_depth

logger = logging.getLogger("vllm.entrypoints.openai.api_server")


def _error(status: int, message: str, param: str | None = None):
    from fastapi.responses import JSONResponse

    from vllm.entrypoints.openai.protocol import ERROR_TYPES, error_body
    return JSONResponse(error_body(message, status, ERROR_TYPES.get(status, "Error"), param),
                        status_code=status)


def _unknown_model(exc: LookupError):
    # 400 rather than vLLM's 404: an unknown model name is a bad request
    # like any other field (as our issue tracker specifies).
    from fastapi.responses import JSONResponse

    from vllm.entrypoints.openai.protocol import error_body
    return JSONResponse(error_body(str(exc.args[0]), 400, "NotFoundError", "model"),
                        status_code=400)


def _validation_message(exc) -> str:
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg')}" if where else str(err.get("msg")))
    return "; ".join(parts) or "invalid request"


class BodyGuard:
    """ASGI middleware that reads a request body before the app parses it:
    over max_bytes it is refused with 413 (at once when Content-Length says
    so, else as soon as a chunked body grows past it); nested deeper than
    MAX_JSON_DEPTH it is refused with 400, before any JSON parser (whose
    recursion a deep body would exhaust) sees it."""

    def __init__(self, app, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s  # for the whole body: slow senders are cut off

    @staticmethod
    async def _answer(send, status: int, message: str) -> None:
        response = _error(status, message)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(response.body)).encode())]})
        await send({"type": "http.response.body", "body": response.body})

    def _too_large(self, size: str) -> str:
        return f"request body of {size} bytes is larger than the limit of {self.max_bytes} bytes"

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._answer(send, 413, self._too_large(length.decode()))
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.timeout_s
        while True:
            try:
                message = await asyncio.wait_for(
                    receive(), max(0.0, deadline - asyncio.get_running_loop().time()))
            except asyncio.TimeoutError:
                return await self._answer(send, 408, f"the request body did not arrive within "
                                                     f"{self.timeout_s:g} s")
            if message["type"] == "http.disconnect":
                return  # gone before the body arrived: nothing to answer
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                return await self._answer(send, 413, self._too_large(f"more than {self.max_bytes}"))
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        depth = json_depth(body)
        if depth > MAX_JSON_DEPTH:
            return await self._answer(send, 400, f"request body is nested {depth} levels deep; "
                                                 f"the limit is {MAX_JSON_DEPTH}")
        replayed = False

        async def replay():
            # The body once, then the real channel (which reports a disconnect).
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


class AuthGuard:
    """ASGI middleware: routes under /v1 need one of the API keys."""

    def __init__(self, app, keys) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope, receive, send):
        from vllm.entrypoints.openai.auth import requires_key
        if scope["type"] == "http" and self.keys and requires_key(scope["path"]):
            headers = dict(scope["headers"])
            authorization = headers.get(b"authorization", b"").decode("latin-1")
            if not self.keys.accepts(authorization):
                response = _error(401, "Unauthorized: a valid API key is required "
                                       "(Authorization: Bearer <key>)")
                return await response(scope, receive, send)
        await self.app(scope, receive, send)


async def _until_disconnected(request) -> None:
    """Returns when the client has gone (the body is already read, so the
    next message on the channel is the disconnect)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def build_app(engine, args: argparse.Namespace):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from vllm.engine.core_client import EngineDeadError
    from vllm.entrypoints.openai.auth import ApiKeys, split_keys
    from vllm.entrypoints.openai.metrics import ServerMetrics
    from vllm.entrypoints.openai.protocol import (ChatCompletionRequest, CompletionRequest,
                                                  DetokenizeRequest, TokenizeRequest)
    from vllm.entrypoints.openai.serving import BadRequest, OpenAIServing

    served = args.served_model_name or [engine.model_config.served_model_name]
    chat_template = args.chat_template
    if chat_template and os.path.isfile(chat_template):
        with open(chat_template) as f:
            chat_template = f.read()
    serving = OpenAIServing(engine, served, chat_template,
                            trust_request_chat_template=args.trust_request_chat_template)
    metrics = ServerMetrics(engine, served[0])
    api_keys = ApiKeys(split_keys(args.api_key) or split_keys(envs.VLLM_API_KEY))
    max_body = args.max_request_body_bytes

    app = FastAPI(title="vLLM-compatible OpenAI server")
    app.state.engine = engine

    # Outermost last: keys are checked before any body is read.
    app.add_middleware(BodyGuard, max_bytes=max_body, timeout_s=args.timeout_request_body)
    app.add_middleware(AuthGuard, keys=api_keys)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_, exc):
        return _error(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_, exc):
        return _error(exc.status_code, str(exc.detail))

    log_requests = not args.disable_log_requests

    async def run(handler, request_model, raw: Request):
        """The handler's answer; if the client goes away first, the handler
        is cancelled, which aborts its engine requests (streaming or not)."""
        if log_requests:
            logger.info("request: %s", request_model.model_dump(exclude={"messages", "prompt"},
                                                                exclude_none=True))
        work = asyncio.ensure_future(handler(request_model))
        gone = asyncio.ensure_future(_until_disconnected(raw))
        try:
            await asyncio.wait({work, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not work.done():  # the client left (or this handler was cancelled)
                work.cancel()
                with contextlib.suppress(BaseException):
                    await work
                logger.info("client disconnected: request aborted")
        if work.cancelled():
            return Response(status_code=499)
        try:
            result = work.result()
        except LookupError as exc:
            return _unknown_model(exc)
        except (BadRequest, ValueError) as exc:
            return _error(400, str(exc))
        except EngineDeadError as exc:
            return _error(503 if envs.VLLM_KEEP_ALIVE_ON_ENGINE_DEATH else 500,
                          f"the engine is dead: {exc}")
        if isinstance(result, dict):
            return JSONResponse(result)
        return StreamingResponse(result, media_type="text/event-stream")

    @app.get("/health")
    async def health():
        return Response(status_code=200 if engine.is_running else 503)

    @app.get("/ping")
    async def ping():
        return Response(status_code=200 if engine.is_running else 503)

    @app.get("/version")
    async def version():
        import vllm
        return {"version": vllm.__version__}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [
            {"id": name, "object": "model", "created": 0, "owned_by": "vllm",
             "root": engine.model_config.path, "parent": None,
             "max_model_len": engine.model_config.max_model_len} for name in served]}

    @app.post("/v1/completions")
    async def completions(request: CompletionRequest, raw: Request):
        return await run(serving.completions, request, raw)

    @app.post("/v1/chat/completions")
    async def chat(request: ChatCompletionRequest, raw: Request):
        return await run(serving.chat, request, raw)

    @app.post("/tokenize")
    async def tokenize(request: TokenizeRequest, raw: Request):
        return await run(serving.tokenize, request, raw)

    @app.post("/detokenize")
    async def detokenize(request: DetokenizeRequest, raw: Request):
        return await run(serving.detokenize, request, raw)

    @app.get("/metrics")
    async def prometheus_metrics():
        from prometheus_client import CONTENT_TYPE_LATEST
        try:
            body = await metrics.render()
        except EngineDeadError as exc:
            return _error(503, f"the engine is dead: {exc}")
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    if envs.VLLM_SERVER_DEV_MODE:
        @app.post("/reset_prefix_cache")
        async def reset_prefix_cache():
            done = await engine.reset_prefix_cache()
            return Response(status_code=200 if done else 409)

    if envs.VLLM_TORCH_PROFILER_DIR:
        @app.post("/start_profile")
        async def start_profile():
            await engine.start_profile()
            return Response(status_code=200)

        @app.post("/stop_profile")
        async def stop_profile():
            return {"trace": await engine.stop_profile()}

    return app


class ServerAddressError(OSError):
    """The server's address cannot be bound (in use, not this machine's)."""


def bind_server_socket(host: str, port: int) -> socket.socket:
    """The server's listening socket, bound now; processes forked later (the
    engine core, its workers) close their copy, so the port is the server's
    alone. OSError naming the address when it cannot be had."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        raise ServerAddressError(exc.errno, f"cannot serve on {host}:{port}: "
                                            f"{exc.strerror or exc}") from None
    os.register_at_fork(after_in_child=sock.close)
    return sock


async def serve(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM (exit 0) or until the engine dies (exit 1,
    unless VLLM_KEEP_ALIVE_ON_ENGINE_DEATH keeps the server answering)."""
    import uvicorn

    from vllm.engine.async_llm import AsyncLLM
    from vllm.entrypoints.openai.cli_args import engine_args_from
    from vllm.logger import init_logging

    init_logging()
    from vllm.usage.usage_lib import UsageContext
    # The port first, as vLLM does: an engine's workers pick free ports for
    # their rendezvous while it starts, and one could take ours; and a port
    # in use fails here, before minutes of loading a model.
    sock = bind_server_socket(args.host, args.port)
    engine = AsyncLLM(engine_args_from(args), usage_context=UsageContext.OPENAI_API_SERVER)
    app = build_app(engine, args)
    from vllm.entrypoints.openai.http_protocol import protocol_with_header_timeout
    config = uvicorn.Config(app, host=args.host, port=args.port,
                            log_level=args.uvicorn_log_level, timeout_graceful_shutdown=3,
                            http=protocol_with_header_timeout(args.timeout_header),
                            timeout_keep_alive=args.timeout_keep_alive,
                            limit_concurrency=args.limit_concurrency)
    server = uvicorn.Server(config)
    # Our own SIGINT/SIGTERM handling: uvicorn's re-raises the signal once it
    # has stopped, killing the process before the engine core is shut down.
    server.capture_signals = contextlib.nullcontext
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: setattr(server, "should_exit", True))
    died = False

    async def watch_engine():
        nonlocal died
        while not server.should_exit:
            await asyncio.sleep(0.5)
            if engine._output_task is None:
                engine._ensure_output_task()  # also watches an idle engine
            if not engine.is_running and not envs.VLLM_KEEP_ALIVE_ON_ENGINE_DEATH:
                logger.error("engine core died (%s): shutting the server down", engine.errored)
                died = True
                server.should_exit = True

    watcher = asyncio.create_task(watch_engine())
    logger.info("serving %s on http://%s:%d", engine.model_config.served_model_name,
                args.host, args.port)
    try:
        await server.serve(sockets=[sock])
    finally:
        watcher.cancel()
        engine.shutdown()
    return 1 if died else 0


def main(argv: list[str] | None = None) -> int:
    from vllm.entrypoints.openai.cli_args import add_serve_args
    parser = argparse.ArgumentParser(prog="python -m vllm.entrypoints.openai.api_server")
    add_serve_args(parser, model_positional=False)
    return asyncio.run(serve(parser.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
