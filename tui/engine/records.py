"""Plain records about a loaded model (no llama_cpp import here)."""

from __future__ import annotations

from dataclasses import dataclass

from ..safe_text import is_clean, visible


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What llama.cpp itself reports about a loaded model, under the name the catalog gives its file
    (:func:`tui.engine.models.display_name`)."""

    name: str
    path: str
    arch: str
    quant: str
    description: str
    n_params: int
    size_bytes: int  # tensor data, as llama_model_size reports
    file_size: int
    n_ctx_train: int
    n_vocab: int
    n_layer: int
    n_head: int
    n_head_kv: int
    n_embd: int
    n_swa: int
    bos: int
    eos: int
    eot: int
    add_bos: bool
    chat_template: str | None
    general_name: str = ""  # the GGUF's general.name (metadata; ``name`` is the display name)

    def __post_init__(self) -> None:
        # general.name and friends come from the GGUF file: made visible once, here, for every display
        for name in ("name", "arch", "quant", "description", "general_name"):
            value = getattr(self, name)
            if not is_clean(value, keep=""):
                object.__setattr__(self, name, visible(value))

    @property
    def has_chat_template(self) -> bool:
        return bool(self.chat_template)
