"""A loaded model's metadata and facts, read through llama.cpp's C API (``ll`` from :mod:`tui.engine.binding`):
the GGUF key/value pairs and the :class:`~tui.engine.records.ModelInfo` the app shows."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

from .binding import ll
from .models import display_name
from .records import ModelInfo


def meta_value(model: Any, key: str) -> str | None:
    """One GGUF metadata value as llama.cpp reads it (None when the key is absent)."""
    buf = ctypes.create_string_buffer(512)
    n = ll.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    if n < 0:
        return None
    if n >= len(buf):
        buf = ctypes.create_string_buffer(n + 1)
        ll.llama_model_meta_val_str(model, key.encode(), buf, len(buf))
    return buf.value.decode("utf-8", errors="replace")


def all_metadata(model: Any) -> dict[str, str]:
    """Every GGUF metadata key and value, as llama.cpp reads them."""
    out: dict[str, str] = {}
    for i in range(int(ll.llama_model_meta_count(model))):
        kbuf = ctypes.create_string_buffer(256)
        ll.llama_model_meta_key_by_index(model, i, kbuf, len(kbuf))
        vbuf = ctypes.create_string_buffer(256)
        n = ll.llama_model_meta_val_str_by_index(model, i, vbuf, len(vbuf))
        if n >= len(vbuf):
            vbuf = ctypes.create_string_buffer(n + 1)
            ll.llama_model_meta_val_str_by_index(model, i, vbuf, len(vbuf))
        out[kbuf.value.decode("utf-8", "replace")] = vbuf.value.decode("utf-8", "replace")
    return out


def read_info(model: Any, vocab: Any, path: Path, file_size: int, n_vocab: int) -> ModelInfo:
    """What the app shows of a loaded model, from llama.cpp's model and vocabulary handles."""
    m, v = model, vocab
    desc = ctypes.create_string_buffer(256)
    ll.llama_model_desc(m, desc, len(desc))
    tmpl = ll.llama_model_chat_template(m, None)
    quant = (ll.llama_ftype_name(ll.llama_model_ftype(m)) or b"?").decode()
    return ModelInfo(
        name=display_name(path),  # the catalog's name for this file, not general.name
        general_name=meta_value(model, "general.name") or "",
        path=str(path),
        arch=meta_value(model, "general.architecture") or "?",
        quant=quant,
        description=desc.value.decode("utf-8", "replace"),
        n_params=int(ll.llama_model_n_params(m)),
        size_bytes=int(ll.llama_model_size(m)),
        file_size=file_size,
        n_ctx_train=int(ll.llama_model_n_ctx_train(m)),
        n_vocab=n_vocab,
        n_layer=int(ll.llama_model_n_layer(m)),
        n_head=int(ll.llama_model_n_head(m)),
        n_head_kv=int(ll.llama_model_n_head_kv(m)),
        n_embd=int(ll.llama_model_n_embd(m)),
        n_swa=int(ll.llama_model_n_swa(m)),
        bos=int(ll.llama_vocab_bos(v)),
        eos=int(ll.llama_vocab_eos(v)),
        eot=int(ll.llama_vocab_eot(v)),
        add_bos=bool(ll.llama_vocab_get_add_bos(v)),
        chat_template=tmpl.decode("utf-8", "replace") if tmpl else None,
    )
