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
import sys

from vllm import envs

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


class BodyLimit:
    """ASGI middleware refusing bodies over max_bytes with 413: at once when
    Content-Length says so, else as soon as a chunked body grows past it."""

    def __init__(self, app, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, send, size: str) -> None:
        response = _error(413, f"request body of {size} bytes is larger than the limit of "
                               f"{self.max_bytes} bytes")
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(response.body)).encode())]})
        await send({"type": "http.response.body", "body": response.body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(send, length.decode())
        received = 0
        too_large = refused = False

        async def counting_receive():
            # Past the limit, stop reading and end the body early; the
            # (failed) response the app then makes is replaced by a 413.
            nonlocal received, too_large
            if too_large:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    too_large = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def replacing_send(message):
            nonlocal refused
            if not too_large:
                return await send(message)
            if not refused:
                refused = True
                await self._refuse(send, f"more than {self.max_bytes}")

        await self.app(scope, counting_receive, replacing_send)


def build_app(engine, args: argparse.Namespace):
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response, StreamingResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from vllm.engine.core_client import EngineDeadError
    from vllm.entrypoints.openai.metrics import ServerMetrics
    from vllm.entrypoints.openai.protocol import (ChatCompletionRequest, CompletionRequest,
                                                  DetokenizeRequest, TokenizeRequest)
    from vllm.entrypoints.openai.serving import BadRequest, OpenAIServing

    served = args.served_model_name or [engine.model_config.served_model_name]
    chat_template = args.chat_template
    if chat_template and os.path.isfile(chat_template):
        with open(chat_template) as f:
            chat_template = f.read()
    serving = OpenAIServing(engine, served, chat_template)
    metrics = ServerMetrics(engine, served[0])
    api_key = args.api_key or envs.VLLM_API_KEY
    max_body = args.max_request_body_bytes

    app = FastAPI(title="vLLM-compatible OpenAI server")
    app.state.engine = engine

    app.add_middleware(BodyLimit, max_bytes=max_body)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1"):
            if request.headers.get("authorization") != f"Bearer {api_key}":
                return _error(401, "Unauthorized: a valid API key is required "
                                   "(Authorization: Bearer <key>)")
        return await call_next(request)

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_, exc):
        return _error(400, _validation_message(exc))

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_, exc):
        return _error(exc.status_code, str(exc.detail))

    log_requests = not args.disable_log_requests

    async def run(handler, request_model):
        if log_requests:
            logger.info("request: %s", request_model.model_dump(exclude={"messages", "prompt"},
                                                                exclude_none=True))
        try:
            result = await handler(request_model)
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
    async def completions(request: CompletionRequest):
        return await run(serving.completions, request)

    @app.post("/v1/chat/completions")
    async def chat(request: ChatCompletionRequest):
        return await run(serving.chat, request)

    @app.post("/tokenize")
    async def tokenize(request: TokenizeRequest):
        return await run(serving.tokenize, request)

    @app.post("/detokenize")
    async def detokenize(request: DetokenizeRequest):
        return await run(serving.detokenize, request)

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


async def serve(args: argparse.Namespace) -> int:
    """Run until SIGINT/SIGTERM (exit 0) or until the engine dies (exit 1,
    unless VLLM_KEEP_ALIVE_ON_ENGINE_DEATH keeps the server answering)."""
    import uvicorn

    from vllm.engine.async_llm import AsyncLLM
    from vllm.entrypoints.openai.cli_args import engine_args_from
    from vllm.logger import init_logging

    init_logging()
    from vllm.usage.usage_lib import UsageContext
    engine = AsyncLLM(engine_args_from(args), usage_context=UsageContext.OPENAI_API_SERVER)
    app = build_app(engine, args)
    config = uvicorn.Config(app, host=args.host, port=args.port,
                            log_level=args.uvicorn_log_level, timeout_graceful_shutdown=3)
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
        await server.serve()
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
