"""The engine core in its own process: a busy loop that takes requests from
the API process over one ZeroMQ socket, steps the scheduler and model, and
pushes outputs back over another (IPC sockets in the client's private
directory; typed msgpack frames, engine/wire.py). A malformed or foreign
frame is logged and dropped: it neither stops the loop nor runs anything.

Running the model in its own process keeps tokenization, detokenization and
HTTP handling off the step loop's CPU time and the GIL."""
from __future__ import annotations

import logging
import os
import signal
import traceback

from vllm.engine.messages import (AbortRequests, AddRequest, EngineCoreOutputs, EngineDead,
                                  EngineReady, GetStats, ResetPrefixCache, Shutdown, StartProfile,
                                  StopProfile, UtilityResult)

logger = logging.getLogger(__name__)


def _handle(core, message, send) -> bool:
    """Apply one input; False on shutdown."""
    from vllm.core.request import RequestStatus
    if isinstance(message, AddRequest):
        core.add_request(message.request)
    elif isinstance(message, AbortRequests):
        status = (RequestStatus.FINISHED_STOPPED if message.stopped
                  else RequestStatus.FINISHED_ABORTED)
        core.abort_requests(message.request_ids, status)
    elif isinstance(message, (ResetPrefixCache, GetStats, StartProfile, StopProfile)):
        call = {ResetPrefixCache: core.reset_prefix_cache, GetStats: core.stats,
                StartProfile: core.start_profile, StopProfile: core.stop_profile}
        try:
            send(UtilityResult(message.call_id, call[type(message)]()))
        except Exception as exc:  # the caller's error, not the engine's death
            send(UtilityResult(message.call_id, None, f"{type(exc).__name__}: {exc}"))
    elif isinstance(message, Shutdown):
        return False
    else:  # well-formed, but a kind only the core sends: a stranger's
        logger.warning("dropped a %s message sent to the engine core", type(message).__name__)
    return True


def run_engine_core(vllm_config, eos_token_id, input_path: str, output_path: str,
                    socket_dir: str, parent_pid: int | None = None) -> None:
    """Process entry point (forked or spawned). With parent_pid, the loop ends when that
    process is gone (killed without shutting us down): no orphaned engines, and the
    socket directory it can no longer remove is removed here."""
    import zmq

    from vllm.engine.core import EngineCore
    from vllm.engine.ipc_dir import remove_socket_dir
    from vllm.engine.wire import MAX_FRAME_BYTES, DropLog, WireError, decode, encode
    from vllm.logger import init_logging
    from vllm.plugins import load_general_plugins
    init_logging()
    load_general_plugins()  # this process builds the model: plugin architectures too
    import threading
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # the API process decides shutdown
    context = zmq.Context()
    inbox = context.socket(zmq.PULL)
    inbox.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
    inbox.bind(input_path)
    outbox = context.socket(zmq.PUSH)
    outbox.connect(output_path)
    dropped = DropLog("engine core's input socket")
    orphaned = False

    def send(message) -> None:
        outbox.send(encode(message))

    def receive():
        try:
            return decode(inbox.recv())
        except WireError as exc:
            dropped(exc)
            return None

    try:
        core = EngineCore(vllm_config, eos_token_id)
        cc = vllm_config.cache_config
        send(EngineReady(cc.num_blocks, cc.block_size))
        logger.info("engine core process %d ready", os.getpid())
        poller = zmq.Poller()
        poller.register(inbox, zmq.POLLIN)
        running = True
        while running:
            if parent_pid is not None and os.getppid() != parent_pid:
                logger.error("API process %d is gone: engine core exiting", parent_pid)
                orphaned = True
                break
            # Idle: wait for work. Busy: take what has arrived, then step.
            timeout = 0 if core.has_unfinished_requests() else 1000
            while poller.poll(timeout):
                message = receive()
                if message is not None and not _handle(core, message, send):
                    running = False
                    break
                timeout = 0
            if running and core.has_unfinished_requests():
                send(EngineCoreOutputs(core.step()))
    except Exception as exc:  # report, then die: the API process decides what happens next
        logger.error("engine core failed:\n%s", traceback.format_exc())
        try:
            send(EngineDead(" ".join(f"{type(exc).__name__}: {exc}".split())))
        except Exception:
            pass
        raise SystemExit(1)
    finally:
        inbox.close(linger=0)
        outbox.close(linger=0 if orphaned else 1000)
        context.term()
        if orphaned:
            remove_socket_dir(socket_dir)
