"""The learning path's experiments: one recipe per roadmap question, each driving a :class:`~tui.learn.host.Host`.

A recipe sets the app up (model, settings, preset, chat, policy), runs, and
says where the answer is (``host.mark``); it returns a :class:`Finding`: the
figure in one line and the values behind it (tests read them).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .. import Question
from ..host import Finding, Host, Runner
from . import stage1, stage2, stage3, stage4, stage5, stage5_rag

EXPERIMENTS: dict[str, Callable[[Runner, int], Awaitable[Finding]]] = {
    "load": stage1.exp_load, "tokens": stage1.exp_tokens, "next_token": stage1.exp_next_token,
    "prompt_form": stage1.exp_prompt_form, "kv_cache": stage2.exp_kv_cache, "new_tokens": stage2.exp_new_tokens,
    "long_context": stage2.exp_long_context, "shift": stage2.exp_shift, "samplers": stage3.exp_samplers,
    "stories": stage3.exp_stories,
    "tree": stage3.exp_tree, "quant_types": stage4.exp_quant_types, "ptq": stage4.exp_ptq,
    "threads": stage4.exp_threads, "gpu": stage4.exp_gpu, "mmap": stage4.exp_mmap, "chat": stage5.exp_chat,
    "remote": stage5.exp_remote, "embeddings": stage5_rag.exp_embeddings, "retrieval": stage5_rag.exp_retrieval,
}


async def run(host: Host, question: Question, variant: int = 0) -> Finding:
    """Run ``question``'s experiment (variation ``variant``) on ``host``. KeyError: no such experiment."""
    return await EXPERIMENTS[question.experiment](Runner(host, question, variant), variant)
