"""Rendering a conversation with the model's (or a given) chat template into
the prompt the engine runs: shared by LLM.chat and the chat route."""
from __future__ import annotations


def render_chat_prompt(tokenizer, messages: list[dict], chat_template: str | None = None,
                       add_generation_prompt: bool = True,
                       continue_final_message: bool = False, **template_kwargs) -> dict:
    """{"prompt": text, "prompt_token_ids": ids}. The template already places
    the special tokens, so tokenizing adds none. template_kwargs become
    variables of the template (chat_template_kwargs)."""
    text = tokenizer.apply_chat_template(
        messages, chat_template=chat_template, tokenize=False,
        add_generation_prompt=add_generation_prompt and not continue_final_message,
        continue_final_message=continue_final_message, **template_kwargs)
    return {"prompt": text,
            "prompt_token_ids": tokenizer(text, add_special_tokens=False).input_ids}
