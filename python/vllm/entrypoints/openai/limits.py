"""Bounds on what one request may ask of the server. Each is checked before
any work starts and refused with a 400 that names the field and the bound;
none is a silent cut. Without them one body ("n": 100000, a max_tokens far
past the context, thousands of stop strings) ties the engine up for every
other client."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np

MAX_PROMPTS_PER_REQUEST = 1024  # a completions batch
MAX_STOP_STRINGS = 64
MAX_STOP_STRING_CHARS = 1024
MAX_STOP_TOKEN_IDS = 1024
MAX_BAD_WORDS = 64
MAX_BAD_WORD_CHARS = 256
MAX_LOGIT_BIAS_ENTRIES = 300
LOGIT_BIAS_RANGE = (-100.0, 100.0)  # OpenAI's
MAX_CHAT_TEMPLATE_KWARGS = 16
MAX_CHAT_TEMPLATE_KWARGS_BYTES = 4096
MAX_JSON_DEPTH = 64
# chat_template_kwargs may not replace what the server itself passes to the
# template call (the template, the conversation, how it is tokenized).
RESERVED_TEMPLATE_KWARGS = frozenset({
    "chat_template", "conversation", "messages", "tokenize", "return_dict",
    "return_tensors", "tokenizer", "tools", "documents", "add_generation_prompt",
    "continue_final_message", "padding", "truncation", "max_length"})


class LimitExceeded(ValueError):
    """A request over one of the bounds: a 400 with this message."""


def json_depth(body: bytes) -> int:
    """Deepest nesting of arrays/objects in a JSON text, counted without
    parsing it (brackets inside strings are skipped), in vectorised passes."""
    if body.count(b"[") + body.count(b"{") <= MAX_JSON_DEPTH:
        return 0  # too few brackets to pass the limit: no scan
    data = np.frombuffer(body, dtype=np.uint8)
    pos = np.arange(len(data))
    backslash = data == ord("\\")
    # length of the run of backslashes ending at each position
    last_other = np.maximum.accumulate(np.where(backslash, -1, pos))
    run = np.where(backslash, pos - last_other, 0)
    quote = data == ord('"')
    escaped = np.zeros_like(quote)
    escaped[1:] = run[:-1] % 2 == 1  # after an odd run of backslashes
    real_quote = quote & ~escaped
    in_string = (np.cumsum(real_quote) - real_quote) % 2 == 1
    step = np.zeros(len(data), dtype=np.int64)
    step[(data == ord("[")) | (data == ord("{"))] = 1
    step[(data == ord("]")) | (data == ord("}"))] = -1
    step[in_string | real_quote] = 0
    return int(np.cumsum(step).max(initial=0))


@dataclass
class RequestLimits:
    max_n: int  # max_num_seqs: more samples than the engine runs at once
    max_model_len: int
    max_token_chars: int  # longest vocabulary entry, in characters

    def check_n(self, n: int) -> None:
        if n > self.max_n:
            raise LimitExceeded(f"n must be at most {self.max_n} (max_num_seqs), got {n}.")

    @staticmethod
    def check_prompt_count(prompts: int) -> None:
        if prompts > MAX_PROMPTS_PER_REQUEST:
            raise LimitExceeded(f"a request may carry at most {MAX_PROMPTS_PER_REQUEST} "
                                f"prompts, got {prompts}.")

    def check_text_length(self, chars: int, what: str = "prompt") -> None:
        """Refuse, before tokenizing, a text no tokenization could fit: each
        token covers at most max_token_chars characters."""
        most = self.max_model_len * self.max_token_chars
        if chars > most:
            raise LimitExceeded(
                f"This model's maximum context length is {self.max_model_len} tokens. "
                f"However, your {what} has {chars} characters, more than any "
                f"{self.max_model_len}-token text can have ({most}).")

    def check_context(self, prompt_tokens: int, max_tokens: int | None, where: str) -> None:
        """vLLM's rule: prompt plus requested completion within max_model_len."""
        if prompt_tokens >= self.max_model_len:
            raise LimitExceeded(f"This model's maximum context length is {self.max_model_len} "
                                f"tokens. However, your {where} has {prompt_tokens} tokens. "
                                f"Please reduce the length of the {where}.")
        if max_tokens is not None and prompt_tokens + max_tokens > self.max_model_len:
            raise LimitExceeded(
                f"This model's maximum context length is {self.max_model_len} tokens. "
                f"However, you requested {prompt_tokens + max_tokens} tokens ({prompt_tokens} "
                f"in the {where}, {max_tokens} in the completion). Please reduce the length "
                f"of the {where} or completion.")


def check_sampling_fields(request) -> None:
    """Bounds on the list-valued sampling fields of a chat/completions body."""
    stop = [request.stop] if isinstance(request.stop, str) else (request.stop or [])
    if len(stop) > MAX_STOP_STRINGS:
        raise LimitExceeded(f"stop may hold at most {MAX_STOP_STRINGS} strings, got {len(stop)}.")
    if any(len(s) > MAX_STOP_STRING_CHARS for s in stop):
        raise LimitExceeded(f"each stop string may be at most {MAX_STOP_STRING_CHARS} "
                            "characters long.")
    if request.stop_token_ids and len(request.stop_token_ids) > MAX_STOP_TOKEN_IDS:
        raise LimitExceeded(f"stop_token_ids may hold at most {MAX_STOP_TOKEN_IDS} ids.")
    words = request.bad_words or []
    if len(words) > MAX_BAD_WORDS or any(len(w) > MAX_BAD_WORD_CHARS for w in words):
        raise LimitExceeded(f"bad_words may hold at most {MAX_BAD_WORDS} words of at most "
                            f"{MAX_BAD_WORD_CHARS} characters.")
    bias = request.logit_bias or {}
    if len(bias) > MAX_LOGIT_BIAS_ENTRIES:
        raise LimitExceeded(f"logit_bias may hold at most {MAX_LOGIT_BIAS_ENTRIES} entries, "
                            f"got {len(bias)}.")
    low, high = LOGIT_BIAS_RANGE
    if any(not low <= v <= high for v in bias.values()):
        raise LimitExceeded(f"logit_bias values must be in [{low:g}, {high:g}].")


def check_chat_template_kwargs(kwargs: dict | None) -> dict:
    if not kwargs:
        return {}
    if len(kwargs) > MAX_CHAT_TEMPLATE_KWARGS:
        raise LimitExceeded(f"chat_template_kwargs may hold at most "
                            f"{MAX_CHAT_TEMPLATE_KWARGS} entries, got {len(kwargs)}.")
    reserved = sorted(RESERVED_TEMPLATE_KWARGS.intersection(kwargs))
    if reserved:
        raise LimitExceeded(f"chat_template_kwargs may not set {', '.join(reserved)}.")
    if len(json.dumps(kwargs, ensure_ascii=False).encode()) > MAX_CHAT_TEMPLATE_KWARGS_BYTES:
        raise LimitExceeded(f"chat_template_kwargs may be at most "
                            f"{MAX_CHAT_TEMPLATE_KWARGS_BYTES} bytes of JSON.")
    return dict(kwargs)
