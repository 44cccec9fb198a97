"""/v1/completions and /v1/chat/completions: build the engine requests, then
answer in one JSON body or as server-sent events (chunks whose text
concatenates to the non-streamed answer)."""
from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import AsyncIterator

from vllm.entrypoints.openai.limits import (RequestLimits, check_chat_template_kwargs,
                                            check_sampling_fields)
from vllm.entrypoints.openai.protocol import ChatCompletionRequest, CompletionRequest
from vllm.outputs import CompletionOutput, RequestOutput
from vllm.transformers_utils.chat import render_chat_prompt


class BadRequest(ValueError):
    """A client error that becomes a 400 with this message."""


def _sse(payload: dict | str) -> str:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {data}\n\n"


def _usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _completion_logprobs(tokenizer, output_logprobs, token_ids, text_offset0: int) -> dict:
    """The legacy completions logprobs object."""
    tokens, token_logprobs, top, offsets = [], [], [], []
    offset = text_offset0
    for token_id, position in zip(token_ids, output_logprobs or []):
        if position is None:  # the first prompt token has no logprob
            piece = tokenizer.decode([token_id])
            tokens.append(piece)
            token_logprobs.append(None)
            top.append(None)
        else:
            entry = position[token_id]
            piece = entry.decoded_token or ""
            tokens.append(piece)
            token_logprobs.append(entry.logprob)
            top.append({lp.decoded_token: lp.logprob for tid, lp in position.items()
                        if tid != token_id or lp.rank is not None})
        offsets.append(offset)
        offset += len(piece)
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top,
            "text_offset": offsets}


def _chat_logprobs(output_logprobs, token_ids, top_n: int) -> dict:
    content = []
    for token_id, position in zip(token_ids, output_logprobs or []):
        entry = position[token_id]
        ranked = sorted(position.items(), key=lambda kv: kv[1].logprob, reverse=True)[:top_n]
        content.append({
            "token": entry.decoded_token, "logprob": max(entry.logprob, -9999.0),
            "bytes": list((entry.decoded_token or "").encode()),
            "top_logprobs": [{"token": lp.decoded_token, "logprob": max(lp.logprob, -9999.0),
                              "bytes": list((lp.decoded_token or "").encode())}
                             for _, lp in ranked]})
    return {"content": content}


def _longest_token_chars(tokenizer) -> int:
    """Characters in the longest vocabulary entry: no token of this
    tokenizer stands for more text."""
    return max((len(token) for token in tokenizer.get_vocab()), default=1) or 1


class OpenAIServing:
    def __init__(self, engine, served_model_names: list[str], chat_template: str | None,
                 trust_request_chat_template: bool = False) -> None:
        self.engine = engine
        self.served_model_names = served_model_names
        self.chat_template = chat_template
        self.trust_request_chat_template = trust_request_chat_template
        self.tokenizer = engine.get_tokenizer()
        self.max_model_len = engine.model_config.max_model_len
        self.default_sampling = engine.model_config.default_sampling
        self.limits = RequestLimits(max_n=engine.vllm_config.scheduler_config.max_num_seqs,
                                    max_model_len=self.max_model_len,
                                    max_token_chars=_longest_token_chars(self.tokenizer))

    def check_model(self, model: str | None) -> None:
        if model is not None and model not in self.served_model_names:
            raise LookupError(f"The model `{model}` does not exist.")

    def _max_tokens_left(self, prompt_len: int) -> int:
        return max(1, self.max_model_len - prompt_len)

    def _check_budget(self, prompt_len: int, max_tokens: int | None, where: str) -> None:
        if max_tokens is not None and max_tokens < 1:
            raise BadRequest(f"max_tokens must be at least 1, got {max_tokens}.")
        self.limits.check_context(prompt_len, max_tokens, where)

    def _start(self, prompt: dict, params, request_id: str):
        """Validate now (a bad request must fail before any response is
        sent), then return the request's output stream."""
        processed = self.engine.processor.process(request_id, prompt, params, time.time())
        return self.engine.generate(prompt, params, request_id, processed=processed)

    # ------------------------------------------------------------ completions
    def _completion_prompts(self, request: CompletionRequest) -> list[dict]:
        prompt = request.prompt
        if isinstance(prompt, str):
            items = [prompt]
        elif prompt and all(isinstance(p, int) for p in prompt):
            items = [prompt]
        else:
            items = list(prompt)
        if not items:
            raise BadRequest("prompt must not be empty")
        self.limits.check_prompt_count(len(items))
        out = []
        for item in items:
            if isinstance(item, str):
                if request.truncate_prompt_tokens is None:  # else long texts are fine
                    self.limits.check_text_length(len(item))
                out.append({"prompt": item, "prompt_token_ids": self.tokenizer(item).input_ids})
            else:
                out.append({"prompt": None, "prompt_token_ids": list(item)})
            if request.cache_salt is not None:
                out[-1]["cache_salt"] = request.cache_salt
        return out

    @staticmethod
    def _kept_tokens(prompt_len: int, request) -> int:
        """Prompt tokens the engine keeps after truncate_prompt_tokens."""
        cut = request.truncate_prompt_tokens
        return prompt_len if cut is None else min(prompt_len, cut)

    async def completions(self, request: CompletionRequest):
        self.check_model(request.model)
        if request.best_of is not None and request.best_of != request.n:
            raise BadRequest("best_of other than n is not supported")
        if request.suffix:
            raise BadRequest("suffix is not supported")
        self.limits.check_n(request.n)
        check_sampling_fields(request)
        prompts = self._completion_prompts(request)
        for p in prompts:
            self._check_budget(self._kept_tokens(len(p["prompt_token_ids"]), request),
                               request.max_tokens, "prompt")
        params = [request.to_sampling_params(self._max_tokens_left(len(p["prompt_token_ids"])),
                                             self.default_sampling)
                  for p in prompts]
        request_id = f"cmpl-{uuid.uuid4().hex}"
        model = request.model or self.served_model_names[0]
        created = int(time.time())
        streams = [self._start(p, sp, f"{request_id}-{i}")
                   for i, (p, sp) in enumerate(zip(prompts, params))]
        if request.stream:
            return self._completion_stream(request, streams, prompts, request_id, model, created)
        results = await asyncio.gather(*[_last(s) for s in streams])
        choices, prompt_tokens, completion_tokens = [], 0, 0
        for i, result in enumerate(results):
            prompt_tokens += len(result.prompt_token_ids)
            for completion in result.outputs:
                completion_tokens += len(completion.token_ids)
                choices.append(self._completion_choice(request, result, completion,
                                                       i * request.n + completion.index))
        return {"id": request_id, "object": "text_completion", "created": created,
                "model": model, "choices": choices,
                "usage": _usage(prompt_tokens, completion_tokens)}

    def _completion_choice(self, request, result: RequestOutput, completion: CompletionOutput,
                           index: int) -> dict:
        text = completion.text
        logprobs = None
        prompt_text = result.prompt or self.tokenizer.decode(result.prompt_token_ids)
        if request.echo:
            text = prompt_text + text
        if request.logprobs is not None:
            logprobs = _completion_logprobs(self.tokenizer, completion.logprobs,
                                            completion.token_ids,
                                            len(prompt_text) if request.echo else 0)
            if request.echo and result.prompt_logprobs is not None:
                echoed = _completion_logprobs(self.tokenizer, result.prompt_logprobs,
                                              result.prompt_token_ids, 0)
                logprobs = {k: echoed[k] + logprobs[k] for k in logprobs}
        return {"index": index, "text": text, "logprobs": logprobs,
                "finish_reason": completion.finish_reason,
                "stop_reason": completion.stop_reason}

    async def _completion_stream(self, request, streams, prompts, request_id, model,
                                 created) -> AsyncIterator[str]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        prompt_tokens = sum(len(p["prompt_token_ids"]) for p in prompts)
        completion_tokens = 0
        echoed: set[tuple[int, int]] = set()
        base = {"id": request_id, "object": "text_completion", "created": created,
                "model": model}
        async for i, result in _merge(streams):
            for completion in result.outputs:
                completion_tokens += len(completion.token_ids)
                text = completion.text
                if request.echo and (i, completion.index) not in echoed:
                    echoed.add((i, completion.index))
                    text = (result.prompt or self.tokenizer.decode(result.prompt_token_ids)) + text
                logprobs = (_completion_logprobs(self.tokenizer, completion.logprobs,
                                                 completion.token_ids, 0)
                            if request.logprobs is not None else None)
                if not text and completion.finish_reason is None and not completion.token_ids:
                    continue
                chunk = dict(base, choices=[{
                    "index": i * request.n + completion.index, "text": text,
                    "logprobs": logprobs, "finish_reason": completion.finish_reason,
                    "stop_reason": completion.stop_reason}])
                if include_usage:
                    chunk["usage"] = None
                yield _sse(chunk)
        if include_usage:
            yield _sse(dict(base, choices=[], usage=_usage(prompt_tokens, completion_tokens)))
        yield _sse("[DONE]")

    # ------------------------------------------------------------ tokens
    async def tokenize(self, request):
        self.check_model(request.model)
        if request.messages is not None:
            tokens = self._chat_prompt(ChatCompletionRequest(
                messages=request.messages,
                add_generation_prompt=request.add_generation_prompt))["prompt_token_ids"]
        elif request.prompt is not None:
            self.limits.check_text_length(len(request.prompt))
            tokens = self.tokenizer(request.prompt,
                                    add_special_tokens=request.add_special_tokens).input_ids
        else:
            raise BadRequest("give 'prompt' or 'messages'")
        return {"tokens": tokens, "count": len(tokens), "max_model_len": self.max_model_len}

    async def detokenize(self, request):
        self.check_model(request.model)
        vocab = self.engine.model_config.vocab_size
        bad = [t for t in request.tokens if not 0 <= t < vocab]
        if bad:
            raise BadRequest(f"token id {bad[0]} is out of vocabulary (0..{vocab - 1})")
        return {"prompt": self.tokenizer.decode(request.tokens)}

    # ------------------------------------------------------------ chat
    def _chat_prompt(self, request: ChatCompletionRequest) -> dict:
        if request.chat_template is not None and not self.trust_request_chat_template:
            # vLLM's CVE-2025-61620: a request's own Jinja template can
            # exhaust the server; only the operator may allow them.
            raise BadRequest("Chat template is passed with request, but "
                             "--trust-request-chat-template is not set. Refused request with "
                             "untrusted chat template.")
        kwargs = check_chat_template_kwargs(request.chat_template_kwargs)
        messages = request.plain_messages()  # ValueError for non-text parts: a 400
        chars = sum(len(m["content"]) for m in messages)
        if request.truncate_prompt_tokens is None:
            self.limits.check_text_length(chars, "messages")
        try:
            # transformers renders in Jinja's ImmutableSandboxedEnvironment:
            # a template reaches no Python internals and mutates nothing.
            prompt = render_chat_prompt(self.tokenizer, messages,
                                        request.chat_template or self.chat_template,
                                        request.add_generation_prompt,
                                        request.continue_final_message, **kwargs)
        except Exception as exc:  # template errors are the request's fault
            raise BadRequest(f"could not apply the chat template: {exc}") from None
        if request.cache_salt is not None:
            prompt["cache_salt"] = request.cache_salt
        return prompt

    async def chat(self, request: ChatCompletionRequest):
        self.check_model(request.model)
        if not request.messages:
            raise BadRequest("messages must not be empty")
        if request.echo:
            raise BadRequest("echo is not supported for chat completions")
        self.limits.check_n(request.n)
        check_sampling_fields(request)
        prompt = self._chat_prompt(request)
        prompt_len = len(prompt["prompt_token_ids"])
        self._check_budget(self._kept_tokens(prompt_len, request),
                           request.max_completion_tokens or request.max_tokens, "messages")
        params = request.to_sampling_params(self._max_tokens_left(prompt_len),
                                            self.default_sampling)
        request_id = f"chatcmpl-{uuid.uuid4().hex}"
        model = request.model or self.served_model_names[0]
        created = int(time.time())
        stream = self._start(prompt, params, request_id)
        if request.stream:
            return self._chat_stream(request, stream, prompt_len, request_id, model, created)
        result = await _last(stream)
        choices, completion_tokens = [], 0
        for completion in result.outputs:
            completion_tokens += len(completion.token_ids)
            choices.append({
                "index": completion.index,
                "message": {"role": "assistant", "content": completion.text},
                "logprobs": (_chat_logprobs(completion.logprobs, completion.token_ids,
                                            request.top_logprobs or 0)
                             if request.logprobs else None),
                "finish_reason": completion.finish_reason,
                "stop_reason": completion.stop_reason})
        return {"id": request_id, "object": "chat.completion", "created": created,
                "model": model, "choices": choices,
                "usage": _usage(prompt_len, completion_tokens)}

    async def _chat_stream(self, request, stream, prompt_len, request_id, model,
                           created) -> AsyncIterator[str]:
        include_usage = bool(request.stream_options and request.stream_options.include_usage)
        base = {"id": request_id, "object": "chat.completion.chunk", "created": created,
                "model": model}
        extra = {"usage": None} if include_usage else {}
        for index in range(request.n):
            yield _sse(dict(base, choices=[{"index": index, "delta": {"role": "assistant",
                                                                      "content": ""},
                                            "logprobs": None, "finish_reason": None}], **extra))
        completion_tokens = 0
        async for _, result in _merge([stream]):
            for completion in result.outputs:
                completion_tokens += len(completion.token_ids)
                if not completion.text and completion.finish_reason is None:
                    continue
                delta = {"content": completion.text} if completion.text else {}
                yield _sse(dict(base, choices=[{
                    "index": completion.index, "delta": delta,
                    "logprobs": (_chat_logprobs(completion.logprobs, completion.token_ids,
                                                request.top_logprobs or 0)
                                 if request.logprobs else None),
                    "finish_reason": completion.finish_reason,
                    "stop_reason": completion.stop_reason}], **extra))
        if include_usage:
            yield _sse(dict(base, choices=[], usage=_usage(prompt_len, completion_tokens)))
        yield _sse("[DONE]")


async def _last(stream) -> RequestOutput:
    last = None
    async for output in stream:
        last = output
    return last


async def _merge(streams) -> AsyncIterator[tuple[int, RequestOutput]]:
    """Interleave several request streams, tagging each output with its
    stream's index; closing this closes (aborts) them all."""
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    async def pump(i, stream):
        try:
            async for item in stream:
                await queue.put((i, item))
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            await queue.put((i, exc))
        finally:
            await queue.put((i, done))

    tasks = [asyncio.create_task(pump(i, s)) for i, s in enumerate(streams)]
    remaining = len(tasks)
    try:
        while remaining:
            i, item = await queue.get()
            if item is done:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield i, item
    finally:
        for task in tasks:
            task.cancel()
        for stream in streams:
            await stream.aclose()
