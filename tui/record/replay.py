"""A stand-in engine for replaying a recording: no model, only what the file holds."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..engine.records import ModelInfo
from ..engine.settings import EngineSettings
from .reader import Session


class ReplayEngine:
    """Answers what the dashboard asks an engine (pieces, metadata, KV layout) from the recording."""

    replay = True

    def __init__(self, session: Session) -> None:
        self.session = session
        head = session.header
        model = head["model"]
        self.settings = EngineSettings.from_dict(head.get("engine", {}))
        self.n_ctx = int(head.get("n_ctx", self.settings.n_ctx))
        self.n_vocab = int(model.get("n_vocab", 0))
        self.n_past = 0
        self.path = None
        self.info = ModelInfo(
            name=model.get("name", "?"), path=model.get("path", ""), arch=model.get("arch", "?"),
            quant=model.get("quant", "?"), description="recorded", n_params=0, size_bytes=0,
            file_size=int(model.get("file_size", 0)), n_ctx_train=0, n_vocab=self.n_vocab, n_layer=0, n_head=0,
            n_head_kv=0, n_embd=0, n_swa=0, bos=-1, eos=-1, eot=-1, add_bos=False, chat_template=None,
        )
        self.remote_header = head.get("remote")  # recorded from a server (tui.remote): no KV bytes of ours
        kv = head.get("kv", {})
        per_token = float(kv.get("bytes_per_token", 0.0))
        self._kv = _RecordedKv(per_token, int(kv.get("allocated", per_token * self.n_ctx)),
                               kv.get("type_k", self.settings.type_k), kv.get("type_v", self.settings.type_v),
                               self.n_ctx)

    def piece(self, token: int) -> bytes:
        return self.session.piece(token)

    def kv_layout(self) -> Any:
        return self._kv

    def close(self) -> None:
        return None


@dataclass(frozen=True, slots=True)
class _RecordedKv:
    """The KV figures the recording kept (it keeps the totals, not the model's dimensions)."""

    bytes_per_token: float
    allocated: int
    type_k: str
    type_v: str
    n_ctx: int

    def used(self, n_past: int) -> int:
        return int(self.bytes_per_token * n_past)
