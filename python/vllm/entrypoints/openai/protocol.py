"""Request bodies of the OpenAI routes (pydantic), with vLLM's extra
sampling fields, and the OpenAI error body."""
from __future__ import annotations

from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

from vllm.sampling_params import RequestOutputKind, SamplingParams


class OpenAIBaseModel(BaseModel):
    # Unknown fields are accepted (clients send newer OpenAI fields) and ignored.
    model_config = ConfigDict(extra="allow")


class StreamOptions(OpenAIBaseModel):
    include_usage: Optional[bool] = False
    continuous_usage_stats: Optional[bool] = False


class _SamplingFields(OpenAIBaseModel):
    model: Optional[str] = None
    n: int = 1
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    presence_penalty: Optional[float] = 0.0
    frequency_penalty: Optional[float] = 0.0
    seed: Optional[int] = None
    stop: Optional[Union[str, list[str]]] = None
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    user: Optional[str] = None
    # vLLM's extras
    top_k: Optional[int] = None
    min_p: Optional[float] = None
    repetition_penalty: Optional[float] = None
    min_tokens: int = 0
    ignore_eos: bool = False
    stop_token_ids: Optional[list[int]] = None
    skip_special_tokens: bool = True
    include_stop_str_in_output: bool = False
    truncate_prompt_tokens: Optional[int] = Field(default=None, ge=1)
    bad_words: Optional[list[str]] = None
    # OpenAI's: token id (as a string key) -> bias added to its logit
    logit_bias: Optional[dict[str, float]] = None
    # Part of the prefix-cache key of this request's blocks: requests with
    # different salts never share cached K/V (vLLM's name and meaning).
    cache_salt: Optional[str] = None

    def logit_bias_ids(self) -> Optional[dict[int, float]]:
        if not self.logit_bias:
            return None
        try:
            return {int(token): float(bias) for token, bias in self.logit_bias.items()}
        except ValueError:
            raise ValueError("logit_bias keys must be token ids (integers as strings)") from None

    def _sampling_params(self, max_tokens: Optional[int], logprobs: Optional[int],
                         prompt_logprobs: Optional[int] = None,
                         defaults: Optional[dict] = None) -> SamplingParams:
        """`defaults`: the model's recommended values (ModelConfig.
        default_sampling) for the fields this request leaves unset."""
        defaults = defaults or {}

        def pick(value, name, fallback):
            return value if value is not None else defaults.get(name, fallback)

        return SamplingParams(
            n=self.n, temperature=pick(self.temperature, "temperature", 1.0),
            top_p=pick(self.top_p, "top_p", 1.0), top_k=pick(self.top_k, "top_k", -1),
            min_p=pick(self.min_p, "min_p", 0.0),
            presence_penalty=self.presence_penalty or 0.0,
            frequency_penalty=self.frequency_penalty or 0.0,
            repetition_penalty=pick(self.repetition_penalty, "repetition_penalty", 1.0),
            seed=self.seed, stop=self.stop, stop_token_ids=self.stop_token_ids,
            ignore_eos=self.ignore_eos, max_tokens=max_tokens, min_tokens=self.min_tokens,
            logprobs=logprobs, prompt_logprobs=prompt_logprobs,
            skip_special_tokens=self.skip_special_tokens,
            include_stop_str_in_output=self.include_stop_str_in_output,
            truncate_prompt_tokens=self.truncate_prompt_tokens,
            bad_words=self.bad_words, logit_bias=self.logit_bias_ids(),
            output_kind=RequestOutputKind.DELTA if self.stream else RequestOutputKind.FINAL_ONLY)


class CompletionRequest(_SamplingFields):
    prompt: Union[str, list[str], list[int], list[list[int]]]
    max_tokens: Optional[int] = 16
    logprobs: Optional[int] = None
    echo: Optional[bool] = False
    best_of: Optional[int] = None
    suffix: Optional[str] = None

    def to_sampling_params(self, default_max_tokens: int,
                           defaults: Optional[dict] = None) -> SamplingParams:
        max_tokens = self.max_tokens if self.max_tokens is not None else default_max_tokens
        prompt_logprobs = self.logprobs if self.echo and self.logprobs is not None else None
        return self._sampling_params(max_tokens, self.logprobs, prompt_logprobs, defaults)


class ChatMessage(OpenAIBaseModel):
    role: str
    content: Optional[Union[str, list[dict[str, Any]]]] = None
    name: Optional[str] = None


class ChatCompletionRequest(_SamplingFields):
    messages: list[ChatMessage]
    max_tokens: Optional[int] = None
    max_completion_tokens: Optional[int] = None
    logprobs: Optional[bool] = False
    top_logprobs: Optional[int] = Field(default=None, ge=0)
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    echo: bool = False
    # Refused unless the server runs with --trust-request-chat-template.
    chat_template: Optional[str] = None
    chat_template_kwargs: Optional[dict[str, Any]] = None

    def to_sampling_params(self, default_max_tokens: int,
                           defaults: Optional[dict] = None) -> SamplingParams:
        max_tokens = self.max_completion_tokens or self.max_tokens
        if max_tokens is None:  # the room left, capped by the model's max_new_tokens
            max_tokens = min(default_max_tokens, (defaults or {}).get("max_tokens", default_max_tokens))
        logprobs = (self.top_logprobs or 0) if self.logprobs else None
        return self._sampling_params(max_tokens, logprobs, defaults=defaults)

    def plain_messages(self) -> list[dict[str, Any]]:
        """Messages for the chat template; text parts of list contents joined."""
        out = []
        for m in self.messages:
            content = m.content
            if isinstance(content, list):
                texts = []
                for part in content:
                    if part.get("type") != "text":
                        raise ValueError(f"message content type {part.get('type')!r} is not "
                                         "supported (text only)")
                    texts.append(part.get("text", ""))
                content = "\n".join(texts)
            message = {"role": m.role, "content": content or ""}
            if m.name:
                message["name"] = m.name
            out.append(message)
        return out


class TokenizeRequest(OpenAIBaseModel):
    model: Optional[str] = None
    prompt: Optional[str] = None
    messages: Optional[list[ChatMessage]] = None
    add_special_tokens: bool = True
    add_generation_prompt: bool = True


class DetokenizeRequest(OpenAIBaseModel):
    model: Optional[str] = None
    tokens: list[int]


def error_body(message: str, status: int, err_type: str = "BadRequestError",
               param: Optional[str] = None) -> dict:
    """OpenAI's error format; the official client reads error.message."""
    return {"error": {"message": message, "type": err_type, "param": param, "code": status},
            # vLLM's older flat fields, for clients written against it
            "object": "error", "message": message, "type": err_type, "code": status}


ERROR_TYPES: dict[int, str] = {400: "BadRequestError", 401: "AuthenticationError",
                               404: "NotFoundError", 413: "RequestTooLarge",
                               499: "ClientClosedRequest",
                               500: "InternalServerError", 503: "ServiceUnavailable"}
