"""The API process's side of the engine core: starts it (a process, or a
thread when VLLM_ENABLE_V1_MULTIPROCESSING=0), sends typed messages over
ZeroMQ IPC sockets and receives its outputs.

The sockets live in a private directory (engine/ipc_dir.py). Each side binds
only the socket it receives on (a PULL): a stranger that connects can at
most send frames, which are decoded as typed msgpack (engine/wire.py) and
dropped when malformed; none can take messages meant for a peer."""
from __future__ import annotations

import atexit
import logging
import multiprocessing
import os
import threading
import time

import zmq
import zmq.asyncio

from vllm import envs
from vllm._fork_safety import fork_is_safe, native_thread_count
from vllm.engine.core_proc import run_engine_core
from vllm.engine.ipc_dir import make_socket_dir, remove_socket_dir
from vllm.engine.messages import EngineDead, EngineReady, Shutdown
from vllm.engine.wire import MAX_FRAME_BYTES, DropLog, WireError, decode, encode

logger = logging.getLogger(__name__)


def _start_method(device: str = "cpu") -> str:
    """VLLM_WORKER_MULTIPROC_METHOD, except that a process whose thread pools
    have started (any forward pass ran here, as when an `LLM` ran first) is
    not forked: the child would hang in its first parallel region. A GPU
    engine core is always spawned, as vLLM does once CUDA is initialised:
    choosing the device asked the CUDA driver for its GPUs here, and a
    forked child cannot use a driver its parent initialised."""
    method = envs.VLLM_WORKER_MULTIPROC_METHOD
    if method == "fork" and device != "cpu":
        logger.info("starting the engine core with spawn, not fork: it runs on the GPU")
        return "spawn"
    if method == "fork" and not fork_is_safe():
        logger.info("starting the engine core with spawn, not fork: this process already "
                    "runs %s threads", native_thread_count())
        return "spawn"
    return method


class EngineDeadError(RuntimeError):
    """The engine core stopped (crashed, was killed, or hung past its step timeout)."""


class EngineCoreClient:
    def __init__(self, vllm_config, eos_token_id: int | None, startup_timeout_s: float = 600.0,
                 multiprocess: bool | None = None) -> None:
        self.multiprocess = (envs.VLLM_ENABLE_V1_MULTIPROCESSING if multiprocess is None
                             else multiprocess)
        self.socket_dir = make_socket_dir(envs.VLLM_RPC_BASE_PATH)
        atexit.register(remove_socket_dir, self.socket_dir)  # however this process ends
        input_path, output_path = (f"ipc://{os.path.join(self.socket_dir, name)}"
                                   for name in ("in.ipc", "out.ipc"))
        self.dropped = DropLog("engine output socket")
        args = (vllm_config, eos_token_id, input_path, output_path, self.socket_dir)
        if self.multiprocess:
            # VLLM_WORKER_MULTIPROC_METHOD, fork by default as in vLLM: a forked
            # core starts with torch and vllm already imported (~2.5 s less
            # start-up than spawn). Started before this process makes its
            # ZeroMQ context (not fork-safe); connecting before the bind below
            # is fine for ZeroMQ.
            method = _start_method(vllm_config.device_config.device)
            self.worker = multiprocessing.get_context(method).Process(
                target=run_engine_core, args=args + (os.getpid(),), name="EngineCore",
                daemon=True)
            self.worker.start()
        self.context = zmq.asyncio.Context()
        self.inbox = self.context.socket(zmq.PUSH)  # to the core, which binds it
        self.inbox.connect(input_path)
        self.outbox = self.context.socket(zmq.PULL)  # from the core
        self.outbox.setsockopt(zmq.MAXMSGSIZE, MAX_FRAME_BYTES)
        self.outbox.bind(output_path)
        if not self.multiprocess:
            self.worker = threading.Thread(target=run_engine_core, args=args,
                                           name="EngineCore", daemon=True)
            self.worker.start()
        self.ready = self._wait_ready(startup_timeout_s)
        self.dead_reason: str | None = None

    def _wait_ready(self, timeout_s: float) -> EngineReady:
        """Block until the core reports ready (model loaded, cache allocated)."""
        sync = zmq.Socket.shadow(self.outbox.underlying)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sync.poll(200):
                try:
                    message = decode(sync.recv())
                except WireError as exc:
                    self.dropped(exc)
                    continue
                if isinstance(message, EngineReady):
                    return message
                if isinstance(message, EngineDead):
                    self.close()
                    raise EngineDeadError(f"engine core failed to start: {message.reason}")
            elif not self.is_alive():
                code = getattr(self.worker, "exitcode", None)
                self.close()
                raise EngineDeadError(f"engine core exited during start-up (exit code {code})")
        self.close()
        raise EngineDeadError(f"engine core not ready after {timeout_s:.0f} s")

    def is_alive(self) -> bool:
        return self.worker.is_alive()

    @property
    def pid(self) -> int | None:
        return getattr(self.worker, "pid", None)

    async def send(self, message) -> None:
        await self.inbox.send(encode(message))

    async def recv(self, timeout_ms: int):
        """The next well-formed message from the core, or None after
        timeout_ms; malformed frames are logged and dropped."""
        deadline = time.monotonic() + timeout_ms / 1000
        while await self.outbox.poll(max(0, int((deadline - time.monotonic()) * 1000))):
            try:
                return decode(await self.outbox.recv())
            except WireError as exc:
                self.dropped(exc)
        return None

    def close(self) -> None:
        if self.worker.is_alive():
            try:
                zmq.Socket.shadow(self.inbox.underlying).send(encode(Shutdown()), zmq.NOBLOCK)
            except zmq.ZMQError:
                pass
            self.worker.join(5)
        if self.multiprocess and self.worker.is_alive():
            self.worker.terminate()
            self.worker.join(5)
        for socket in (self.inbox, self.outbox):
            socket.close(linger=0)
        self.context.term()
        remove_socket_dir(self.socket_dir)
