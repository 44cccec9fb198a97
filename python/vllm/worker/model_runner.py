"""The model runner: turns a SchedulerOutput into one forward pass over the
flattened tokens of every scheduled request, then samples.

It keeps its own copy of each running request's tokens and block ids (the
scheduler sends only what changed), builds the attention metadata, and
returns typed outputs. It decides nothing about scheduling.

One runner for every device: on the CPU the inputs are the numpy arrays'
own memory; a device runner (`device`, e.g. cuda:0) stages them through
one pinned host buffer and one copy a step (vllm/worker/input_staging.py),
and samples on the device (the sampler is device-neutral)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vllm.attention.backends.metadata import AttentionMetadata
from vllm.core.sched_output import ModelRunnerOutput, SampledLogprobs, SchedulerOutput
from vllm.forward_context import set_forward_context
from vllm.sample.sampler import Sampler, SamplingState, logprobs_for_tokens
from vllm.sequence import IntermediateTensors
from vllm.worker.input_staging import InputStaging


@dataclass
class _RequestState:
    token_ids: list[int]
    num_prompt_tokens: int
    block_ids: list[int]
    sampling: SamplingState


class ModelRunner:
    def __init__(self, model: torch.nn.Module, block_size: int, eos_token_id: int | None,
                 logits_processor_threads: int | None = None,
                 device: torch.device | str = "cpu", stage_inputs: bool | None = None) -> None:
        """`stage_inputs`: copy the step's inputs through InputStaging (default:
        on any device but the CPU; tests force it on the CPU)."""
        self.model = model
        self.device = torch.device(device)
        if stage_inputs is None:
            stage_inputs = self.device.type != "cpu"
        self.staging = InputStaging(self.device) if stage_inputs else None
        # decode batches replayed from CUDA graphs (vllm/worker/cuda_graphs.py),
        # set by a GPU worker that captured them
        self.decode_graphs = None
        self.block_size = block_size
        self.eos_token_id = eos_token_id
        self.sampler = Sampler(logits_processor_threads)
        self.requests: dict[str, _RequestState] = {}
        # tensor parallelism: the group whose first rank's samples every rank
        # takes (unseeded sampling would otherwise draw differently per rank)
        self.tp_group = None
        # pipeline parallelism: only the last stage computes logits and
        # samples; the others learn the tokens from the next step's input
        from vllm.distributed.parallel_state import (get_pipeline_model_parallel_rank,
                                                     get_pipeline_model_parallel_world_size)
        self.is_last_stage = (get_pipeline_model_parallel_rank()
                              == get_pipeline_model_parallel_world_size() - 1)

    def _update_states(self, sched: SchedulerOutput) -> None:
        if not self.is_last_stage:
            for req_id, token in sched.sampled_token_ids.items():
                state = self.requests.get(req_id)
                if state is not None:
                    self._append_token(state, token)
        for req_id in sched.finished_req_ids | sched.preempted_req_ids:
            self.requests.pop(req_id, None)
        for new in sched.scheduled_new_reqs:
            tokens = list(new.token_ids)
            prompt = tokens[:new.num_prompt_tokens]
            outputs = tokens[new.num_prompt_tokens:]
            self.requests[new.req_id] = _RequestState(
                tokens, new.num_prompt_tokens, list(new.block_ids),
                SamplingState.create(new.sampling_params, prompt, outputs, self.eos_token_id))
        for cached in sched.scheduled_cached_reqs:
            self.requests[cached.req_id].block_ids.extend(cached.new_block_ids)

    @staticmethod
    def _append_token(state: _RequestState, token: int) -> None:
        state.token_ids.append(token)
        state.sampling.output_token_ids.append(token)  # penalties, min_tokens, processors

    @torch.inference_mode()
    def execute(self, sched: SchedulerOutput,
                intermediate_tensors: IntermediateTensors | None = None
                ) -> ModelRunnerOutput | IntermediateTensors:
        """The step's output; on a pipeline stage before the last, what the
        next stage takes (`intermediate_tensors` on every stage but the
        first: what the previous one handed on)."""
        self._update_states(sched)
        if sched.total_num_scheduled_tokens == 0:
            return ModelRunnerOutput({})
        bs = self.block_size
        req_ids = list(sched.num_scheduled_tokens)
        counts = np.fromiter(sched.num_scheduled_tokens.values(), dtype=np.int64,
                             count=len(req_ids))
        starts = {c.req_id: c.num_computed_tokens for c in sched.scheduled_cached_reqs}
        starts.update({n.req_id: n.num_computed_tokens for n in sched.scheduled_new_reqs})

        states = [self.requests[r] for r in req_ids]
        computed = np.array([starts[r] for r in req_ids], dtype=np.int64)
        seq_lens = computed + counts
        query_start = np.zeros(len(req_ids) + 1, dtype=np.int64)
        np.cumsum(counts, out=query_start[1:])
        max_blocks = max(len(s.block_ids) for s in states)
        block_table = np.zeros((len(req_ids), max_blocks), dtype=np.int32)
        input_ids = np.empty(int(query_start[-1]), dtype=np.int64)
        positions = np.empty_like(input_ids)
        for i, state in enumerate(states):
            block_table[i, :len(state.block_ids)] = state.block_ids
            lo, hi = int(query_start[i]), int(query_start[i + 1])
            input_ids[lo:hi] = state.token_ids[computed[i]:seq_lens[i]]
            positions[lo:hi] = np.arange(computed[i], seq_lens[i])
        row_of_token = np.repeat(np.arange(len(req_ids)), counts)
        slot_mapping = block_table[row_of_token, positions // bs].astype(np.int64) * bs \
            + positions % bs

        arrays = {"input_ids": input_ids, "positions": positions, "slot_mapping": slot_mapping,
                  "query_start_loc": query_start.astype(np.int32),
                  "seq_lens": seq_lens.astype(np.int32), "block_tables": block_table}
        # Rows that end at the last known token produce the next token.
        sampled = [i for i, state in enumerate(states) if seq_lens[i] == len(state.token_ids)]
        sample_rows = [int(query_start[i + 1]) - 1 for i in sampled]
        wants_prompt_logprobs = [
            state.sampling.params.prompt_logprobs is not None
            and computed[i] < state.num_prompt_tokens for i, state in enumerate(states)]
        # Only the sampled rows' hidden states are read (no prompt logprobs):
        # the model's last layer serves those rows alone.
        pruned = (getattr(self.model, "supports_output_rows", False)
                  and len(sample_rows) < len(input_ids) and not any(wants_prompt_logprobs))
        if pruned:
            per_seq = np.zeros(len(req_ids) + 1, dtype=np.int32)
            per_seq[np.asarray(sampled, dtype=np.int64) + 1] = 1
            arrays["output_rows"] = np.asarray(sample_rows, dtype=np.int64)
            arrays["output_query_start_loc"] = np.cumsum(per_seq, dtype=np.int32)
        inputs = (self.staging.to_device(arrays) if self.staging is not None
                  else {name: torch.from_numpy(array) for name, array in arrays.items()})
        md = AttentionMetadata(
            slot_mapping=inputs["slot_mapping"], query_start_loc=inputs["query_start_loc"],
            seq_lens=inputs["seq_lens"], block_tables=inputs["block_tables"],
            max_query_len=int(counts.max()), max_seq_len=int(seq_lens.max()), block_size=bs)
        if pruned:
            md.output_rows = inputs["output_rows"]
            md.output_query_start_loc = inputs["output_query_start_loc"]
        graph_size = (self.decode_graphs.padded_size(len(req_ids))
                      if (self.decode_graphs is not None and md.max_query_len == 1
                          and not pruned and intermediate_tensors is None
                          and self.is_last_stage) else None)
        if graph_size is not None:
            hidden = self.decode_graphs.run(graph_size, inputs, len(req_ids))
        else:
            with set_forward_context(md):
                if intermediate_tensors is None:
                    hidden = self.model(inputs["input_ids"], inputs["positions"])
                else:
                    hidden = self.model(inputs["input_ids"], inputs["positions"],
                                        intermediate_tensors)
        if not self.is_last_stage:
            return hidden

        sample_states = [states[i].sampling for i in sampled]
        sample_ids = [req_ids[i] for i in sampled]
        prompt_logprobs: dict[str, list[SampledLogprobs]] = {}
        # the LM head in the step's context too: a quantized head computes as
        # the step's layers do (see linear.quant_int8_max_rows)
        with set_forward_context(md):
            for i, (req_id, state) in enumerate(zip(req_ids, states)):
                if wants_prompt_logprobs[i]:
                    prompt_logprobs[req_id] = self._prompt_logprobs(
                        hidden, state, int(query_start[i]), int(computed[i]), int(seq_lens[i]),
                        state.sampling.params.prompt_logprobs)
            if not sample_rows:
                return ModelRunnerOutput({}, {}, prompt_logprobs)
            # every row sampled (a decode batch): no gather. Each torch op
            # between the steps' weight streams runs cold (tens of us).
            every_row = pruned or len(sample_rows) == hidden.shape[0]
            logits = self.model.compute_logits(hidden if every_row else hidden[sample_rows])
        tokens, logprobs = self.sampler(logits, sample_states)
        if self.tp_group is not None:
            tokens = self.tp_group.broadcast_object(tokens, src=0)
        for req_id, token in zip(sample_ids, tokens):
            self._append_token(self.requests[req_id], token)
        return ModelRunnerOutput(
            dict(zip(sample_ids, tokens)),
            {r: lp for r, lp in zip(sample_ids, logprobs) if lp is not None},
            prompt_logprobs)

    def _prompt_logprobs(self, hidden: torch.Tensor, state: _RequestState, row0: int,
                         start: int, end: int, k: int) -> list[SampledLogprobs]:
        """Logprobs of the prompt tokens this chunk predicts: the row at
        position p predicts token p + 1, up to the prompt's last token."""
        last = min(end, state.num_prompt_tokens - 1)  # rows start .. last - 1
        if last <= start:
            return []
        logits = self.model.compute_logits(hidden[row0:row0 + last - start])
        return logprobs_for_tokens(logits, state.token_ids[start + 1:last + 1], k)
