"""SamplingParams with vLLM's names, defaults and validation."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

_EPS = 1e-5  # temperatures below this are greedy, as in vLLM


class SamplingType(Enum):
    GREEDY = 0
    RANDOM = 1
    RANDOM_SEED = 2


class RequestOutputKind(Enum):
    CUMULATIVE = 0  # every output so far
    DELTA = 1  # only what is new since the last output
    FINAL_ONLY = 2  # one output, when the request finishes


# (output token ids, logits) -> logits, or (prompt ids, output ids, logits) -> logits
LogitsProcessor = Callable[..., Any]


@dataclass
class SamplingParams:
    n: int = 1
    best_of: int | None = None
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1  # -1 (or 0) = off
    min_p: float = 0.0
    seed: int | None = None
    stop: str | list[str] | None = None
    stop_token_ids: list[int] | None = None
    bad_words: list[str] | None = None
    ignore_eos: bool = False
    max_tokens: int | None = 16
    min_tokens: int = 0
    logprobs: int | None = None
    prompt_logprobs: int | None = None
    detokenize: bool = True
    skip_special_tokens: bool = True
    # Accepted for vLLM compatibility; fast (Rust) tokenizers, the only kind
    # loaded here, always join special tokens their own way.
    spaces_between_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    logits_processors: list[LogitsProcessor] | None = None
    # token id -> value added to its logit before sampling (OpenAI's logit_bias)
    logit_bias: dict[int, float] | None = None
    truncate_prompt_tokens: int | None = None
    output_kind: RequestOutputKind = RequestOutputKind.CUMULATIVE
    # Filled by the engine from the tokenizer / generation config.
    all_stop_token_ids: set[int] = field(default_factory=set, repr=False)
    bad_words_token_ids: list[list[int]] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        elif self.stop is None:
            self.stop = []
        else:
            self.stop = list(self.stop)
        self.stop_token_ids = list(self.stop_token_ids or [])
        if 0 < self.temperature < _EPS:
            self.temperature = 0.0
        if self.top_k == 0:
            self.top_k = -1
        self._verify()
        if self.temperature == 0.0:  # greedy: the random knobs do nothing
            self.top_p, self.top_k, self.min_p = 1.0, -1, 0.0
        self.all_stop_token_ids = set(self.stop_token_ids)

    def _verify(self) -> None:
        def bad(reason: str) -> None:
            raise ValueError(reason)

        for name in ("presence_penalty", "frequency_penalty", "repetition_penalty",
                     "temperature", "top_p", "min_p"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                bad(f"{name} must be a finite number, got {value!r}.")

        if not isinstance(self.n, int) or self.n < 1:
            bad(f"n must be at least 1, got {self.n}.")
        if self.best_of is not None and self.best_of != self.n:
            bad(f"best_of other than n is not supported (as in vLLM V1), got n={self.n} and "
                f"best_of={self.best_of}.")
        if not -2.0 <= self.presence_penalty <= 2.0:
            bad(f"presence_penalty must be in [-2, 2], got {self.presence_penalty}.")
        if not -2.0 <= self.frequency_penalty <= 2.0:
            bad(f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty}.")
        if not 0.0 < self.repetition_penalty <= 2.0:
            bad(f"repetition_penalty must be in (0, 2], got {self.repetition_penalty}.")
        if self.temperature < 0.0:
            bad(f"temperature must be non-negative, got {self.temperature}.")
        if not 0.0 < self.top_p <= 1.0:
            bad(f"top_p must be in (0, 1], got {self.top_p}.")
        if not isinstance(self.top_k, int) or self.top_k < -1:
            bad(f"top_k must be -1 (disable), or at least 1, got {self.top_k}.")
        if not 0.0 <= self.min_p <= 1.0:
            bad(f"min_p must be in [0, 1], got {self.min_p}.")
        if self.max_tokens is not None and self.max_tokens < 1:
            bad(f"max_tokens must be at least 1, got {self.max_tokens}.")
        if self.min_tokens < 0:
            bad(f"min_tokens must be greater than or equal to 0, got {self.min_tokens}.")
        if self.max_tokens is not None and self.min_tokens > self.max_tokens:
            bad(f"min_tokens must be less than or equal to max_tokens={self.max_tokens}, "
                f"got {self.min_tokens}.")
        if self.logprobs is not None and self.logprobs < 0:
            bad(f"logprobs must be non-negative, got {self.logprobs}.")
        if self.prompt_logprobs is not None and self.prompt_logprobs < 0:
            bad(f"prompt_logprobs must be non-negative, got {self.prompt_logprobs}.")
        if self.truncate_prompt_tokens is not None and self.truncate_prompt_tokens < 1:
            bad(f"truncate_prompt_tokens must be >= 1, got {self.truncate_prompt_tokens}")
        if any(not s for s in self.stop):
            bad("stop cannot contain an empty string.")
        if self.stop and not self.detokenize:
            bad("stop strings are only supported when detokenize is True. Set "
                "detokenize=True to use stop.")
        if any(not isinstance(t, int) or t < 0 for t in self.stop_token_ids):
            bad(f"stop_token_ids must be non-negative integers, got {self.stop_token_ids}.")
        if self.logits_processors and not all(callable(p) for p in self.logits_processors):
            bad("logits_processors must be callables.")
        if self.logit_bias is not None and not all(
                isinstance(t, int) and not isinstance(t, bool) and t >= 0
                and isinstance(b, (int, float)) and math.isfinite(b)
                for t, b in self.logit_bias.items()):
            bad("logit_bias must map non-negative token ids to finite numbers.")
        if self.seed is not None and not isinstance(self.seed, int):
            bad(f"seed must be an integer, got {self.seed!r}.")
        if self.seed is not None and not -(1 << 63) <= self.seed < (1 << 63):
            bad(f"seed must fit in a 64-bit signed integer, got {self.seed}.")
        for name in ("n", "top_k", "max_tokens", "min_tokens", "logprobs", "prompt_logprobs",
                     "truncate_prompt_tokens"):
            value = getattr(self, name)
            if isinstance(value, int) and value >= (1 << 63):
                bad(f"{name} must fit in a 64-bit signed integer, got {value}.")
        if any(t >= (1 << 63) for t in self.stop_token_ids):
            bad("stop_token_ids must fit in 64-bit signed integers.")

    @property
    def sampling_type(self) -> SamplingType:
        if self.temperature == 0.0:
            return SamplingType.GREEDY
        return SamplingType.RANDOM if self.seed is None else SamplingType.RANDOM_SEED

    def clone(self, **changes: Any) -> "SamplingParams":
        import copy
        new = copy.copy(self)
        new.stop = list(self.stop)
        new.stop_token_ids = list(self.stop_token_ids)
        new.all_stop_token_ids = set(self.all_stop_token_ids)
        new.bad_words_token_ids = [list(w) for w in self.bad_words_token_ids]
        if self.logit_bias is not None:
            new.logit_bias = dict(self.logit_bias)
        for key, value in changes.items():
            setattr(new, key, value)
        return new
