"""Turning a user's prompt and SamplingParams into core Requests: tokenize,
validate against the model, apply engine-wide stop ids, fan n samples out
into n requests. Shared by LLMEngine and AsyncLLM."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vllm.config import ModelConfig
from vllm.core.request import Request
from vllm.sampling_params import SamplingParams
from vllm.transformers_utils.tokenizer import stop_token_ids_of

# str | list[int] | {"prompt": str} | {"prompt_token_ids": [...]}; a dict may
# also carry "cache_salt" (vLLM's name): a per-tenant prefix-cache key.
PromptType = Any


@dataclass
class ProcessedRequest:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    children: list[Request]


class InputProcessor:
    def __init__(self, model_config: ModelConfig, tokenizer) -> None:
        self.model_config = model_config
        self.tokenizer = tokenizer
        self.extra_stop_ids = stop_token_ids_of(model_config.hf_config, tokenizer)

    def tokens_of(self, prompt: PromptType) -> tuple[str | None, list[int]]:
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

    @staticmethod
    def cache_salt_of(prompt: PromptType) -> str | None:
        salt = prompt.get("cache_salt") if isinstance(prompt, dict) else None
        if salt is not None and (not isinstance(salt, str) or not salt):
            raise ValueError("Parameter 'cache_salt' must be a non-empty string if provided.")
        return salt

    def validate_prompt(self, token_ids: list[int]) -> None:
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

    def _bad_word_sequences(self, words: list[str]) -> list[list[int]]:
        """Token sequences of each bad word, as it would appear at the start
        of the text and after a space (as vLLM bans both)."""
        sequences = []
        for word in words:
            for variant in (word.lstrip(), " " + word.lstrip()):
                ids = self.tokenizer(variant, add_special_tokens=False).input_ids
                if ids and ids not in sequences:
                    sequences.append(ids)
        return sequences

    def validate_params(self, params: SamplingParams) -> None:
        """What depends on the model: logprob counts (max_logprobs, as in
        vLLM) and logit_bias token ids."""
        limit = self.model_config.max_logprobs
        if params.logprobs is not None and params.logprobs > limit:
            raise ValueError(f"Requested sample logprobs of {params.logprobs}, which is greater "
                             f"than max allowed: {limit}")
        if params.prompt_logprobs is not None and params.prompt_logprobs > limit:
            raise ValueError(f"Requested prompt logprobs of {params.prompt_logprobs}, which is "
                             f"greater than max allowed: {limit}")
        vocab = self.model_config.vocab_size
        if params.logit_bias and any(t >= vocab for t in params.logit_bias):
            raise ValueError(f"logit_bias has token ids out of vocabulary (0..{vocab - 1})")

    def process(self, request_id: str, prompt: PromptType, params: SamplingParams,
                arrival_time: float) -> ProcessedRequest:
        if not isinstance(params, SamplingParams):
            raise ValueError("params must be a SamplingParams")
        self.validate_params(params)
        text, token_ids = self.tokens_of(prompt)
        cache_salt = self.cache_salt_of(prompt)
        if params.truncate_prompt_tokens is not None:
            token_ids = token_ids[-params.truncate_prompt_tokens:]
        self.validate_prompt(token_ids)
        params = params.clone()
        if not params.ignore_eos:
            params.all_stop_token_ids |= self.extra_stop_ids
        if params.max_tokens is None:
            params.max_tokens = self.model_config.max_model_len - len(token_ids)
        if params.bad_words:
            params.bad_words_token_ids = self._bad_word_sequences(params.bad_words)
        children = []
        for index in range(params.n):
            child = params.clone(n=1)
            if params.n > 1 and params.seed is not None:
                child.seed = params.seed + index  # distinct but reproducible samples
            child_id = f"{index}_{request_id}" if params.n > 1 else request_id
            children.append(Request(child_id, token_ids, child, self.tokenizer.eos_token_id,
                                    arrival_time, cache_salt))
        return ProcessedRequest(request_id, text, token_ids, children)
