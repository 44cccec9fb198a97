"""LLM: offline batched generation, as in vLLM.

    from vllm import LLM, SamplingParams
    llm = LLM()                      # the embedded SmolLM2-135M-Instruct
    llm.generate(["Hello"], SamplingParams(max_tokens=32))
"""
from __future__ import annotations

import itertools
from typing import Any, Sequence

from vllm.engine.arg_utils import EngineArgs
from vllm.engine.llm_engine import LLMEngine, PromptType
from vllm.outputs import RequestOutput
from vllm.sampling_params import SamplingParams
from vllm.transformers_utils.chat import render_chat_prompt
from vllm.usage.usage_lib import UsageContext


class LLM:
    def __init__(self, model: str | None = None, tokenizer: str | None = None,
                 dtype: str = "auto", seed: int = 0, max_model_len: int | None = None,
                 **kwargs: Any) -> None:
        # accepted for vLLM scripts: this engine logs statistics on request
        kwargs.pop("disable_log_stats", None)
        args = EngineArgs(model=model, tokenizer=tokenizer, dtype=dtype, seed=seed,
                          max_model_len=max_model_len, **kwargs)
        self.llm_engine = LLMEngine.from_engine_args(args, UsageContext.LLM_CLASS)
        self._counter = itertools.count()

    def get_tokenizer(self):
        return self.llm_engine.get_tokenizer()

    def reset_prefix_cache(self) -> bool:
        return self.llm_engine.reset_prefix_cache()

    def start_profile(self) -> None:
        """Start a torch profiler trace (needs VLLM_TORCH_PROFILER_DIR)."""
        self.llm_engine.engine_core.start_profile()

    def stop_profile(self) -> str:
        """Stop it; returns the path of the Chrome trace written."""
        return self.llm_engine.engine_core.stop_profile()

    def get_default_sampling_params(self) -> SamplingParams:
        """SamplingParams with the model's recommended defaults (see
        ModelConfig.default_sampling), what generate/chat use when given none."""
        return SamplingParams(**self.llm_engine.model_config.default_sampling)

    def generate(self, prompts: PromptType | Sequence[PromptType] | None = None,
                 sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
                 use_tqdm: bool = True, *, prompt_token_ids: list[list[int]] | None = None
                 ) -> list[RequestOutput]:
        if prompt_token_ids is not None:
            from vllm.logger import warn_deprecated
            warn_deprecated("LLM.generate(prompt_token_ids=...) is deprecated: pass "
                            "[{'prompt_token_ids': ids}, ...] as the prompts")
        if prompts is None and prompt_token_ids is not None:
            prompts = [{"prompt_token_ids": ids} for ids in prompt_token_ids]
        if prompts is None:
            raise ValueError("generate() needs prompts")
        if isinstance(prompts, (str, dict)) or (
                isinstance(prompts, list) and prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        prompts = list(prompts)
        if sampling_params is None:
            sampling_params = self.get_default_sampling_params()
        if isinstance(sampling_params, SamplingParams):
            params_list = [sampling_params] * len(prompts)
        else:
            params_list = list(sampling_params)
            if len(params_list) != len(prompts):
                raise ValueError(f"{len(prompts)} prompts but {len(params_list)} "
                                 "sampling params: give one, or one per prompt")
        request_ids = []
        for prompt, params in zip(prompts, params_list):
            request_id = str(next(self._counter))
            self.llm_engine.add_request(request_id, prompt, params)
            request_ids.append(request_id)
        return self._run(request_ids, use_tqdm)

    def chat(self, messages: list[dict] | list[list[dict]],
             sampling_params: SamplingParams | Sequence[SamplingParams] | None = None,
             use_tqdm: bool = True, chat_template: str | None = None,
             add_generation_prompt: bool = True,
             continue_final_message: bool = False) -> list[RequestOutput]:
        conversations = messages if messages and isinstance(messages[0], list) else [messages]
        tokenizer = self.get_tokenizer()
        prompts = [render_chat_prompt(tokenizer, conversation, chat_template,
                                      add_generation_prompt, continue_final_message)
                   for conversation in conversations]
        return self.generate(prompts, sampling_params, use_tqdm)

    def _run(self, request_ids: list[str], use_tqdm: bool) -> list[RequestOutput]:
        engine = self.llm_engine
        pending = set(request_ids)
        finished: dict[str, RequestOutput] = {}
        bar = None
        if use_tqdm:
            from tqdm.auto import tqdm
            bar = tqdm(total=len(request_ids), desc="Processed prompts", dynamic_ncols=True,
                       postfix="est. speed input: 0.00 toks/s, output: 0.00 toks/s")
        in_tokens = out_tokens = 0
        while pending and engine.has_unfinished_requests():
            for output in engine.step():
                if output.finished and output.request_id in pending:
                    pending.discard(output.request_id)
                    finished[output.request_id] = output
                    if bar is not None:
                        in_tokens += len(output.prompt_token_ids)
                        out_tokens += sum(len(o.token_ids) for o in output.outputs)
                        elapsed = bar.format_dict["elapsed"] or 1e-9
                        bar.postfix = (f"est. speed input: {in_tokens / elapsed:.2f} toks/s, "
                                       f"output: {out_tokens / elapsed:.2f} toks/s")
                        bar.update(1)
        if bar is not None:
            bar.close()
        return [finished[r] for r in request_ids if r in finished]
