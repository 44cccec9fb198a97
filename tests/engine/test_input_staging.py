"""The runner's staged-input path (one packed copy a step, as a GPU runner
takes) gives exactly the plain path's outputs: greedy and seeded samples,
logprobs, prompt logprobs, chunked and batched steps. Forced on the CPU."""
from vllm import SamplingParams
from vllm.worker.input_staging import InputStaging


def _outputs(llm, prompts):
    params = [SamplingParams(temperature=0.0, max_tokens=12, logprobs=2, prompt_logprobs=1),
              SamplingParams(temperature=0.8, top_p=0.9, seed=7, max_tokens=12),
              SamplingParams(temperature=0.0, max_tokens=12)]
    outs = llm.generate(prompts, [params[i % 3] for i in range(len(prompts))], use_tqdm=False)
    return [(o.outputs[0].token_ids,
             [sorted((k, round(v.logprob, 5)) for k, v in step.items())
              for step in o.outputs[0].logprobs or []],
             [None if p is None else sorted((k, round(v.logprob, 5)) for k, v in p.items())
              for p in o.prompt_logprobs or []]) for o in outs]


def test_staged_inputs_give_the_plain_paths_outputs(smollm_fp32):
    prompts = ["The capital of France is", "Write a haiku about the sea.",
               "List three primary colors: red,", "One two three four five six seven"] * 2
    runner = smollm_fp32.llm_engine.engine_core.worker.runner
    assert runner.staging is None  # a CPU runner reads the arrays' own memory
    plain = _outputs(smollm_fp32, prompts)
    smollm_fp32.reset_prefix_cache()
    runner.staging = InputStaging(runner.device)
    try:
        staged = _outputs(smollm_fp32, prompts)
    finally:
        runner.staging = None
        smollm_fp32.reset_prefix_cache()
    assert staged == plain
    assert any(len(o[0]) == 12 for o in plain)
