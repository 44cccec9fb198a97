"""LLMEngine: the synchronous engine behind LLM. Tokenizes prompts, fans a
request with n samples out into n core requests, steps the core, and turns
its outputs into RequestOutputs."""
from __future__ import annotations

import logging
import time

from vllm.core.request import RequestStatus
from vllm.engine.arg_utils import EngineArgs
from vllm.engine.core import EngineCore
from vllm.engine.output_processor import OutputProcessor
from vllm.engine.processor import InputProcessor, PromptType
from vllm.outputs import RequestOutput
from vllm.plugins import load_general_plugins
from vllm.sampling_params import SamplingParams
from vllm.usage.usage_lib import UsageContext, report_usage, usage_settings

logger = logging.getLogger(__name__)


class LLMEngine:
    def __init__(self, args: EngineArgs,
                 usage_context: UsageContext = UsageContext.ENGINE_CONTEXT) -> None:
        load_general_plugins()  # before the model is resolved: plugins may add architectures
        self.vllm_config, self.tokenizer = args.create_engine_config(usage_context)
        self.model_config = self.vllm_config.model_config
        if self.vllm_config.parallel_config.replicas_here > 1:
            raise ValueError(
                "data_parallel_size > 1 runs engine replicas behind AsyncLLM / `vllm serve "
                "--data-parallel-size N`; offline, start one LLM per rank with VLLM_DP_SIZE "
                "and VLLM_DP_RANK set (each takes its share of the CPUs)")
        self.processor = InputProcessor(self.model_config, self.tokenizer)
        self.engine_core = EngineCore(self.vllm_config, self.tokenizer.eos_token_id)
        self.output_processor = OutputProcessor(self.tokenizer)
        report_usage(usage_context, self.model_config.architecture,
                     usage_settings(self.vllm_config))

    @classmethod
    def from_engine_args(cls, args: EngineArgs,
                         usage_context: UsageContext = UsageContext.ENGINE_CONTEXT
                         ) -> "LLMEngine":
        return cls(args, usage_context)

    def get_tokenizer(self):
        return self.tokenizer

    # ------------------------------------------------------------ requests
    def add_request(self, request_id: str, prompt: PromptType, params: SamplingParams,
                    arrival_time: float | None = None) -> None:
        if request_id in self.output_processor.parents:
            raise ValueError(f"request id {request_id!r} is already in use")
        arrival = time.time() if arrival_time is None else arrival_time
        processed = self.processor.process(request_id, prompt, params, arrival)
        self.output_processor.add_request(
            request_id, [r.request_id for r in processed.children], processed.prompt,
            processed.prompt_token_ids, [r.sampling_params for r in processed.children],
            arrival)
        for request in processed.children:
            self.engine_core.add_request(request)

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
