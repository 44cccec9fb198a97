"""LLMEngine: the synchronous engine behind LLM. Tokenizes prompts, fans a
request with n samples out into n core requests, steps the core, and turns
its outputs into RequestOutputs."""
from __future__ import annotations

import logging
import time
from typing import Any

from vllm.core.request import Request, RequestStatus
from vllm.engine.arg_utils import EngineArgs
from vllm.engine.core import EngineCore
from vllm.engine.output_processor import OutputProcessor
from vllm.outputs import RequestOutput
from vllm.sampling_params import SamplingParams
from vllm.transformers_utils.tokenizer import stop_token_ids_of

logger = logging.getLogger(__name__)

PromptType = Any  # str | list[int] | {"prompt": str} | {"prompt_token_ids": [...]}


class LLMEngine:
    def __init__(self, args: EngineArgs) -> None:
        self.vllm_config, self.tokenizer = args.create_engine_config()
        self.model_config = self.vllm_config.model_config
        self.extra_stop_ids = stop_token_ids_of(self.model_config.hf_config, self.tokenizer)
        self.engine_core = EngineCore(self.vllm_config, self.tokenizer.eos_token_id)
        self.output_processor = OutputProcessor(self.tokenizer)

    @classmethod
    def from_engine_args(cls, args: EngineArgs) -> "LLMEngine":
        return cls(args)

    def get_tokenizer(self):
        return self.tokenizer

    # ------------------------------------------------------------ requests
    def _prompt_tokens(self, prompt: PromptType) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            return prompt, self.tokenizer(prompt).input_ids
        if isinstance(prompt, dict):
            if "prompt_token_ids" in prompt:
                return prompt.get("prompt"), list(prompt["prompt_token_ids"])
            if "prompt" in prompt:
                return prompt["prompt"], self.tokenizer(prompt["prompt"]).input_ids
            raise ValueError("a prompt dict needs 'prompt' or 'prompt_token_ids'")
        if isinstance(prompt, (list, tuple)) and all(isinstance(t, int) for t in prompt):
            return None, list(prompt)
        raise ValueError(f"unsupported prompt type {type(prompt).__name__}: give a string, "
                         "a list of token ids, or a dict with 'prompt' / 'prompt_token_ids'")

    def _validate_prompt(self, token_ids: list[int]) -> None:
        if not token_ids:
            raise ValueError("The decoder prompt cannot be empty")
        max_len = self.model_config.max_model_len
        if len(token_ids) >= max_len:
            raise ValueError(f"The decoder prompt (length {len(token_ids)}) is longer than "
                             f"the maximum model length of {max_len}. Make sure that "
                             "`max_model_len` is no smaller than the number of text tokens "
                             "plus one.")
        vocab = self.model_config.vocab_size
        bad = [t for t in token_ids if not 0 <= t < vocab]
        if bad:
            raise ValueError(f"token id {bad[0]} is out of vocabulary (0..{vocab - 1})")

    def add_request(self, request_id: str, prompt: PromptType, params: SamplingParams,
                    arrival_time: float | None = None) -> None:
        if not isinstance(params, SamplingParams):
            raise ValueError("params must be a SamplingParams")
        if request_id in self.output_processor.parents:
            raise ValueError(f"request id {request_id!r} is already in use")
        text, token_ids = self._prompt_tokens(prompt)
        if params.truncate_prompt_tokens is not None:
            token_ids = token_ids[-params.truncate_prompt_tokens:]
        self._validate_prompt(token_ids)
        arrival = time.time() if arrival_time is None else arrival_time
        params = params.clone()
        if not params.ignore_eos:
            params.all_stop_token_ids |= self.extra_stop_ids
        max_len = self.model_config.max_model_len
        if params.max_tokens is None:
            params.max_tokens = max_len - len(token_ids)
        children = []
        for index in range(params.n):
            child = params.clone(n=1)
            if params.n > 1 and params.seed is not None:
                child.seed = params.seed + index  # distinct but reproducible samples
            children.append((f"{index}_{request_id}" if params.n > 1 else request_id, child))
        self.output_processor.add_request(request_id, [c for c, _ in children], text,
                                          token_ids, [p for _, p in children], arrival)
        for child_id, child_params in children:
            self.engine_core.add_request(Request(child_id, token_ids, child_params,
                                                 self.tokenizer.eos_token_id, arrival))

    def abort_request(self, request_ids: str | list[str]) -> None:
        ids = [request_ids] if isinstance(request_ids, str) else list(request_ids)
        for request_id in ids:
            children = self.output_processor.child_ids(request_id)
            self.engine_core.abort_requests(children)
            self.output_processor.abort(request_id)

    def has_unfinished_requests(self) -> bool:
        return self.engine_core.has_unfinished_requests() or self.output_processor.has_unfinished()

    def get_num_unfinished_requests(self) -> int:
        return len(self.output_processor.parents)

    # ------------------------------------------------------------ stepping
    def step(self) -> list[RequestOutput]:
        outputs = self.engine_core.step()
        results, to_stop = self.output_processor.process(outputs)
        if to_stop:
            self.engine_core.abort_requests(to_stop, RequestStatus.FINISHED_STOPPED)
        return results

    def get_stats(self):
        return self.engine_core.stats()

    def reset_prefix_cache(self) -> bool:
        return self.engine_core.reset_prefix_cache()
