"""The sampler: logits processors, min_tokens, penalties, then greedy or
temperature / top-k / top-p / min-p sampling, with vLLM's semantics.

Returned logprobs are the model's raw log-softmax (before any processing),
as vLLM returns by default. Seeded requests draw from their own generator,
one draw per step, so their samples do not depend on what else is in the
batch.

Device-neutral: every tensor it makes lives on the logits' device (a GPU
runner samples where its logits are), and a seeded request's generator is
made on that device at its first draw."""
from __future__ import annotations

import inspect
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import torch

from vllm import _custom_ops as ops
from vllm.core.sched_output import SampledLogprobs
from vllm.sampling_params import SamplingParams


@dataclass
class SamplingState:
    """What the sampler needs of one request (kept by the runner)."""
    params: SamplingParams
    prompt_token_ids: list[int]
    output_token_ids: list[int]
    eos_token_id: int | None
    generator: torch.Generator | None = None  # made at the first draw, on its device
    _processor_arity: list[int] = field(default_factory=list)

    @classmethod
    def create(cls, params: SamplingParams, prompt: list[int], outputs: list[int],
               eos_token_id: int | None) -> "SamplingState":
        state = cls(params, prompt, outputs, eos_token_id)
        state._processor_arity = [_required_arguments(p) for p in params.logits_processors or []]
        return state

    def step_generator(self, device: torch.device | str = "cpu") -> torch.Generator | None:
        """Seeded requests: a generator on `device` keyed by (seed, output
        position), so a draw depends on neither the batch nor an earlier
        preemption."""
        if self.params.seed is None:
            return None
        if self.generator is None or self.generator.device != torch.device(device):
            self.generator = torch.Generator(device=device)
        key = (self.params.seed * 1_000_003 + len(self.output_token_ids)) % (1 << 63)
        return self.generator.manual_seed(key)


def _required_arguments(processor) -> int:
    """2: (output ids, logits); 3: (prompt ids, output ids, logits)."""
    params = inspect.signature(processor).parameters.values()
    return sum(1 for p in params if p.default is inspect.Parameter.empty
               and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))


def _apply_processors(state: SamplingState, row: torch.Tensor) -> torch.Tensor:
    for processor, arity in zip(state.params.logits_processors, state._processor_arity):
        if arity == 3:
            row = processor(state.prompt_token_ids, state.output_token_ids, row)
        else:
            row = processor(state.output_token_ids, row)
    return row


def _apply_penalties(state: SamplingState, row: torch.Tensor) -> None:
    p = state.params
    vocab = row.shape[0]
    if p.repetition_penalty != 1.0:
        seen = torch.zeros(vocab, dtype=torch.bool, device=row.device)
        tokens = [t for t in state.prompt_token_ids + state.output_token_ids if t < vocab]
        if tokens:
            seen[torch.tensor(tokens, device=row.device)] = True
        penalised = torch.where(row > 0, row / p.repetition_penalty,
                                row * p.repetition_penalty)
        row.copy_(torch.where(seen, penalised, row))
    if (p.frequency_penalty or p.presence_penalty) and state.output_token_ids:
        counts = torch.bincount(torch.tensor(state.output_token_ids, device=row.device),
                                minlength=vocab)[:vocab]
        row -= p.frequency_penalty * counts.to(row.dtype)
        row -= p.presence_penalty * (counts > 0).to(row.dtype)


def _ban_bad_words(state: SamplingState, row: torch.Tensor) -> None:
    """Forbid the token that would complete a bad word's token sequence."""
    outputs = state.output_token_ids
    for sequence in state.params.bad_words_token_ids:
        prefix = sequence[:-1]
        if len(outputs) >= len(prefix) and outputs[len(outputs) - len(prefix):] == prefix:
            if sequence[-1] < row.shape[0]:
                row[sequence[-1]] = float("-inf")


def _top_k_top_p_min_p(logits: torch.Tensor, states: list[SamplingState]) -> torch.Tensor:
    vocab, device = logits.shape[1], logits.device
    top_k_values = [s.params.top_k if s.params.top_k > 0 else vocab for s in states]
    top_p_values = [s.params.top_p for s in states]
    min_p_values = [s.params.min_p for s in states]
    top_k = torch.tensor(top_k_values, device=device)
    top_p = torch.tensor(top_p_values, dtype=torch.float32, device=device)
    min_p = torch.tensor(min_p_values, dtype=torch.float32, device=device)
    # decided on the host lists: no device-to-host sync for the common case
    if min(top_k_values) < vocab or min(top_p_values) < 1.0:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        kth = sorted_logits.gather(1, (top_k.clamp(max=vocab) - 1)[:, None])
        sorted_logits = sorted_logits.masked_fill(sorted_logits < kth, float("-inf"))
        probs = sorted_logits.softmax(-1)
        # drop a token once the mass before it already reaches top_p (keep >= 1)
        before = probs.cumsum(-1) - probs
        sorted_logits = sorted_logits.masked_fill(before >= top_p[:, None], float("-inf"))
        logits = torch.empty_like(logits).scatter_(1, order, sorted_logits)
    if max(min_p_values) > 0:
        probs = logits.softmax(-1)
        threshold = min_p[:, None] * probs.max(-1, keepdim=True).values
        logits = logits.masked_fill(probs < threshold, float("-inf"))
    return logits


def _logprobs_of(raw: torch.Tensor, token: int, k: int) -> SampledLogprobs:
    value = raw[token]
    rank = int((raw > value).sum()) + 1
    ids, lps, ranks = [token], [float(value)], [rank]
    if k > 0:
        top = raw.topk(k)
        ids += top.indices.tolist()
        lps += top.values.tolist()
        ranks += list(range(1, k + 1))
    return SampledLogprobs(ids, lps, ranks)


def logprobs_for_tokens(logits: torch.Tensor, tokens: list[int],
                        k: int) -> list[SampledLogprobs]:
    """Raw logprobs of given tokens (prompt logprobs) plus the top-k at each row."""
    raw = logits.float().log_softmax(-1)
    return [_logprobs_of(raw[i], t, k) for i, t in enumerate(tokens)]


_HAS_GREEDY_ARGMAX = ops._C is not None and hasattr(torch.ops._C, "greedy_argmax")


def _plain_greedy(state: SamplingState) -> bool:
    """Whether nothing below changes this row's logits or asks for more than
    its argmax: the exact complement of the steps in Sampler.__call__."""
    p = state.params
    return (not p.temperature > 0 and p.logprobs is None and not p.logits_processors
            and len(state.output_token_ids) >= p.min_tokens
            and p.repetition_penalty == 1.0 and not p.frequency_penalty
            and not p.presence_penalty and not p.bad_words_token_ids and not p.logit_bias)


class Sampler:
    def __init__(self, processor_threads: int | None = None) -> None:
        self.pool = (ThreadPoolExecutor(processor_threads, thread_name_prefix="logits-proc")
                     if processor_threads else None)

    def __call__(self, logits: torch.Tensor, states: list[SamplingState]
                 ) -> tuple[list[int], list[SampledLogprobs | None]]:
        """logits: [rows, vocab] in the model's dtype (fp32 math below)."""
        if (_HAS_GREEDY_ARGMAX and logits.device.type == "cpu"
                and all(_plain_greedy(s) for s in states)):
            # argmax straight from the 16-bit logits: the fp32 copy and torch's
            # argmax cost ~2.7 ms of a 64-sequence decode step
            return ops.greedy_argmax(logits).tolist(), [None] * len(states)
        logits = logits.float()
        want_logprobs = [s.params.logprobs is not None for s in states]
        raw = logits.log_softmax(-1) if any(want_logprobs) else None
        with_processors = [i for i, s in enumerate(states) if s.params.logits_processors]
        if with_processors:
            rows = [logits[i] for i in with_processors]
            jobs = [(states[i], rows[n]) for n, i in enumerate(with_processors)]
            results = (list(self.pool.map(lambda a: _apply_processors(*a), jobs)) if self.pool
                       else [_apply_processors(*a) for a in jobs])
            logits = logits.clone()
            for i, row in zip(with_processors, results):
                logits[i] = row
        for i, state in enumerate(states):
            p = state.params
            if p.logit_bias:
                ids = list(p.logit_bias)
                logits[i, ids] += torch.tensor([p.logit_bias[t] for t in ids],
                                               dtype=logits.dtype, device=logits.device)
            if len(state.output_token_ids) < p.min_tokens:
                banned = set(p.all_stop_token_ids)
                if state.eos_token_id is not None and not p.ignore_eos:
                    banned.add(state.eos_token_id)
                banned = [t for t in banned if t < logits.shape[1]]
                if banned:
                    logits[i, banned] = float("-inf")
            if (p.repetition_penalty != 1.0 or p.frequency_penalty or p.presence_penalty):
                _apply_penalties(state, logits[i])
            if p.bad_words_token_ids:
                _ban_bad_words(state, logits[i])

        tokens = logits.argmax(-1)
        random_rows = [i for i, s in enumerate(states) if s.params.temperature > 0]
        if random_rows:
            sub_states = [states[i] for i in random_rows]
            index = torch.tensor(random_rows, device=logits.device)
            temps = torch.tensor([s.params.temperature for s in sub_states],
                                 device=logits.device)
            scaled = _top_k_top_p_min_p(logits[index] / temps[:, None], sub_states)
            probs = scaled.softmax(-1)
            # Gumbel-style: argmax(p / q), q ~ Exp(1), equals sampling from p.
            noise = torch.empty_like(probs)
            for n, state in enumerate(sub_states):
                noise[n].exponential_(generator=state.step_generator(noise.device))
            tokens[index] = (probs / noise).argmax(-1)

        token_list = tokens.tolist()
        logprobs = [(_logprobs_of(raw[i], token_list[i], s.params.logprobs)
                     if raw is not None and s.params.logprobs is not None else None)
                    for i, s in enumerate(states)]
        return token_list, logprobs
