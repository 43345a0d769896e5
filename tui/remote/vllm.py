"""vLLM's OpenAI-compatible server: the OpenAI protocol plus what vLLM adds.

What vLLM adds (``vllm/entrypoints/openai/api_server.py`` and ``.../engine/protocol.py``):
``GET /version`` answers ``{"version": ...}``; each ``/v1/models`` entry is owned by
``"vllm"`` and carries ``max_model_len`` (the context the engine runs with); streams
take ``stream_options.include_usage``, and the usage has
``prompt_tokens_details.cached_tokens`` when the server runs with
``--enable-prompt-tokens-details``; ``/metrics`` is always Prometheus text
(``vllm:*``, with the KV cache's usage). Logprobs are capped by ``--max-logprobs``
(20 by default): a request for more is refused with a 400, which
:meth:`OpenAIBackend.stream` answers by asking again for fewer.
Candidates are named by their text (no token ids), as in any OpenAI server.
"""

from __future__ import annotations

from typing import Any, ClassVar

from .backend import MetricsSample, RemoteInfo
from .http import Endpoint, RemoteError, safe_url
from .openai import OpenAIBackend
from .parse import as_count


def _version(body: Any) -> str | None:
    version = body.get("version") if isinstance(body, dict) else None
    return version if isinstance(version, str) else None


class VLLMBackend(OpenAIBackend):
    name: ClassVar[str] = "vllm"
    stream_usage: ClassVar[bool] = True  # vLLM accepts stream_options.include_usage
    max_logprobs: ClassVar[int] = 20  # vLLM's --max-logprobs default

    def __init__(self, endpoint: Endpoint) -> None:
        super().__init__(endpoint)
        self.version = ""

    @classmethod
    def detect(cls, endpoint: Endpoint) -> bool:
        # /version alone is common; a model list that names vLLM as its owner is vLLM's own
        # (SGLang answers the same list shape with "owned_by": "sglang")
        try:
            version = endpoint.get_json("/version", timeout=5)
            models = endpoint.get_json("/v1/models", timeout=5)
        except RemoteError:
            return False
        data = models.get("data") if isinstance(models, dict) else None
        return (_version(version) is not None and isinstance(data, list)
                and any(isinstance(m, dict) and m.get("owned_by") == "vllm" for m in data))

    def _answers(self, path: str) -> bool:
        try:
            self.endpoint.get_text(path, timeout=5, limit=8 * 2**20)
        except RemoteError:
            return False
        return True

    def info(self) -> RemoteInfo:
        if self._info is not None:
            return self._info
        models = self.models()
        first = models[0] if models else {}
        model = str(first.get("id") or "") or "(no model listed)"
        n_ctx = as_count(first.get("max_model_len"))
        try:
            self.version = _version(self.endpoint.get_json("/version", timeout=5)) or ""
        except RemoteError:
            self.version = ""
        metrics = self._answers("/metrics")
        top_k = self._top_k  # lowered by stream() when the server refused this many
        notes = [f"asks for at most {top_k} logprobs per token (vLLM's default --max-logprobs)"] if top_k else []
        if self.refused_logprobs:
            notes.append("the server refused logprobs: tokens arrive without probabilities")
        self._info = RemoteInfo(
            backend=self.name, url=safe_url(self.endpoint.url), model=model, n_ctx=n_ctx, chat=True,
            max_top_k=top_k, token_ids=False, version=self.version,
            exposes={"logprobs": top_k > 0, "top_k": top_k > 0, "token_ids": False, "n_ctx": n_ctx is not None,
                     "kv": metrics, "metrics": metrics, "tokenize": False,
                     # usage.prompt_tokens_details.cached_tokens: only with --enable-prompt-tokens-details
                     "cache_n": False, "server_sampler_chain": False},
            notes=tuple(notes),
        )
        return self._info

    def metrics(self) -> MetricsSample:
        from .metrics import sample_from_prometheus

        info = self.info()
        return sample_from_prometheus(self.endpoint.get_text("/metrics", limit=8 * 2**20), backend=self.name,
                                      url=info.url, model=info.model)
