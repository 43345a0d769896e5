"""Remote inference servers as sources of steps (``llmtui --remote URL``); no Textual, no llama_cpp.

:mod:`.http` talks HTTP and turns every failure into one line; :mod:`.backend`
is what a protocol gives; one module per protocol (:mod:`.llama_server`,
:mod:`.openai`, :mod:`.vllm`, :mod:`.ollama`, :mod:`.sglang`); :mod:`.source`
makes a server an engine and a controller for the run model; :mod:`.metrics`
reads the Prometheus text the fleet view polls.
"""

from __future__ import annotations

from .backend import Backend, RemoteInfo
from .http import Endpoint, RemoteError, normalise_url, safe_url

BACKENDS = ("auto", "llama-server", "vllm", "ollama", "sglang", "openai")

__all__ = ["BACKENDS", "Backend", "Endpoint", "RemoteError", "RemoteInfo", "backend_class", "connect",
           "normalise_url", "safe_url"]


_MODULES = {"llama-server": ("llama_server", "LlamaServerBackend"), "vllm": ("vllm", "VLLMBackend"),
            "ollama": ("ollama", "OllamaBackend"), "sglang": ("sglang", "SGLangBackend"),
            "openai": ("openai", "OpenAIBackend")}


def backend_class(name: str) -> type[Backend]:
    import importlib

    try:
        module, cls = _MODULES[name]
    except KeyError:
        raise RemoteError(f"unknown backend {name!r}: one of {', '.join(BACKENDS)}", kind="bad-url") from None
    return getattr(importlib.import_module(f"{__name__}.{module}"), cls)


# detection order: the servers with their own endpoints first, the generic OpenAI API last
DETECT_ORDER = ("llama-server", "ollama", "sglang", "vllm", "openai")


def connect(url: str, *, api_key: str | None = None, backend: str = "auto", timeout: float | None = None) -> Backend:
    """A backend for the server at ``url``, its protocol detected from what it answers (``backend="auto"``).
    Raises :class:`RemoteError` with one line: unreachable, refused, wrong key, not an inference server."""
    endpoint = Endpoint(url, api_key) if timeout is None else Endpoint(url, api_key, timeout=timeout)
    if backend != "auto":
        chosen = backend_class(backend)(endpoint)
        chosen.info()  # reachable, and the protocol it was told
        return chosen
    # one plain request first: a refused connection, a wrong key or an HTML page says so at once
    try:
        endpoint.get_text("/v1/models", timeout=min(endpoint.timeout, 10))
    except RemoteError as exc:
        if exc.kind in ("refused", "unreachable", "timeout", "auth", "died", "html"):
            raise
    for name in DETECT_ORDER:
        cls = backend_class(name)
        if cls.detect(endpoint):
            found = cls(endpoint)
            found.info()
            return found
    raise RemoteError(f"{endpoint.shown} answers, but not as an inference server llmtui knows (llama-server, vLLM, "
                      "Ollama, SGLang or the OpenAI API): check the URL, or pass --backend", kind="unknown")
