"""Ollama's own API: ``/api/generate`` (raw completions) and ``/api/chat``, streamed as JSON lines.

From Ollama's ``api/types.go`` and ``server/routes.go``: since v0.12.11 both
endpoints take ``logprobs: true`` and ``top_logprobs: N`` (0..20, more is a
400) and every streamed line carries ``logprobs``: one entry per token,
``{token, logprob, bytes, top_logprobs: [{token, logprob, bytes}]}`` — by text,
no token ids; ``bytes`` keeps a token that is only part of a UTF-8 character
(its ``token`` text is then U+FFFD). The last line has ``"done": true``,
``done_reason`` and the counters (``prompt_eval_count``, ``eval_count``, durations
in nanoseconds). ``/api/version``, ``/api/ps`` (running models, their
``context_length``), ``/api/tags`` (installed ones) and ``/api/show`` (GGUF
metadata: ``<arch>.context_length``) describe the server. Ollama has no
Prometheus page and no tokenizer endpoint.
"""

from __future__ import annotations

import codecs
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from .backend import Backend, Candidate, Key, MetricsSample, ProbeResult, RemoteDone, RemoteInfo, RemoteToken, Request
from .http import RemoteError, safe_url
from .parse import as_count, as_logprob

MAX_TOP_LOGPROBS = 20  # server/routes.go: "top_logprobs must be between 0 and 20"
LOGPROBS_SINCE = (0, 12, 11)  # the first release with logprobs on /api/generate and /api/chat


def _release(version: str) -> tuple[int, ...] | None:
    """``"0.12.11"`` → (0, 12, 11); None for what is not a release number (a dev build)."""
    parts = version.strip().lstrip("v").split("-", 1)[0].split(".")
    if len(parts) < 2 or not all(p.isascii() and p.isdigit() and len(p) <= 6 for p in parts[:3]):
        return None
    return tuple(int(p) for p in parts[:3])


def _piece(entry: dict[str, Any]) -> tuple[str, bytes]:
    """A logprob entry's (key, bytes). The key is its text, or ``bytes:\\xNN...`` when its bytes are not that text
    (part of a UTF-8 character: the two halves of a split emoji would otherwise share the key U+FFFD)."""
    token = entry.get("token") if isinstance(entry.get("token"), str) else ""
    raw = entry.get("bytes")
    if isinstance(raw, list) and raw and all(isinstance(b, int) and not isinstance(b, bool) and 0 <= b < 256
                                             for b in raw):
        piece = bytes(raw)
    else:
        piece = token.encode("utf-8", "surrogatepass")
    try:
        same = piece.decode("utf-8") == token
    except UnicodeDecodeError:
        same = False
    return (token if same else "bytes:" + "".join(f"\\x{b:02x}" for b in piece)), piece


def _candidates(entries: Any) -> tuple[Candidate, ...]:
    if not isinstance(entries, list):
        return ()
    out = []
    for entry in entries:
        if isinstance(entry, dict):
            lp = as_logprob(entry.get("logprob"))
            if lp is not None:
                key, piece = _piece(entry)
                out.append(Candidate(key, piece, lp))
    return tuple(sorted(out, key=lambda c: -c.logprob))


def _ms(ns: Any) -> float | None:
    if isinstance(ns, bool) or not isinstance(ns, (int, float)) or not math.isfinite(ns) or ns < 0:
        return None
    return ns / 1e6


def done_from_line(line: dict[str, Any]) -> RemoteDone:
    reason = line.get("done_reason") if isinstance(line.get("done_reason"), str) else None
    return RemoteDone(reason, prompt_n=as_count(line.get("prompt_eval_count")),
                      predicted_n=as_count(line.get("eval_count")), prompt_ms=_ms(line.get("prompt_eval_duration")),
                      predicted_ms=_ms(line.get("eval_duration")), stopped_eog=reason == "stop")


class OllamaBackend(Backend):
    name: ClassVar[str] = "ollama"
    detect_path: ClassVar[str] = "/api/version"

    @classmethod
    def recognises(cls, body: dict[str, Any]) -> bool:
        return isinstance(body.get("version"), str)

    # -- what the server is ------------------------------------------------------------------------------

    def _models(self, path: str) -> list[dict[str, Any]]:
        body = self.endpoint.get_json(path)
        models = body.get("models") if isinstance(body, dict) else None
        if not isinstance(models, list):
            raise RemoteError(f"{self.endpoint.shown}{path} did not list models (no \"models\"): not Ollama?",
                              kind="bad-json")
        return [m for m in models if isinstance(m, dict) and isinstance(m.get("name", m.get("model")), str)]

    def info(self) -> RemoteInfo:
        if self._info is not None:
            return self._info
        version_body = self.endpoint.get_json("/api/version")
        version = version_body.get("version") if isinstance(version_body, dict) else None
        version = version if isinstance(version, str) else ""
        running = self._models("/api/ps")
        chosen = running[0] if running else None
        if chosen is None:
            installed = self._models("/api/tags")
            if not installed:
                raise RemoteError(f"{self.endpoint.shown} runs Ollama but has no models: `ollama pull <model>` first",
                                  kind="unsupported")
            chosen = installed[0]
        model = str(chosen.get("name") or chosen.get("model"))
        show = self._object("/api/show", {"model": model})
        model_info = show.get("model_info") if isinstance(show.get("model_info"), dict) else {}

        def meta(suffix: str) -> int | None:
            for key, value in model_info.items():
                if isinstance(key, str) and key.endswith(suffix) and as_count(value):
                    return as_count(value)
            return None

        notes: list[str] = []
        n_ctx = as_count(chosen.get("context_length")) if running else None  # what the loaded model runs with
        if n_ctx is None:
            n_ctx = meta(".context_length")
            if n_ctx is not None:
                notes.append("n_ctx is the model's trained length: Ollama runs it with its own num_ctx")
        release = _release(version)
        top_k = MAX_TOP_LOGPROBS if release is None or release >= LOGPROBS_SINCE else 0
        if not top_k:
            notes.append(f"Ollama {version} returns no logprobs (0.12.11 or later does)")
        self._info = RemoteInfo(
            backend=self.name, url=safe_url(self.endpoint.url), model=model, n_ctx=n_ctx,
            n_vocab=meta(".vocab_size"), chat=True, max_top_k=top_k, token_ids=False, version=version,
            exposes={"logprobs": top_k > 0, "top_k": top_k > 0, "token_ids": False, "n_ctx": n_ctx is not None,
                     "kv": False, "metrics": False, "tokenize": False, "cache_n": False,
                     "server_sampler_chain": False},
            notes=tuple(notes),
        )
        return self._info

    # -- generation ------------------------------------------------------------------------------------------

    def _body(self, request: Request, n_probs: int) -> dict[str, Any]:
        options: dict[str, Any] = {"num_predict": request.max_tokens, **request.sampling.fields()}
        body: dict[str, Any] = {"model": self.model, "stream": True, "options": options}
        if request.messages:
            body["messages"] = list(request.messages)
        else:
            body["prompt"] = request.prompt
            body["raw"] = True  # the prompt as it is: no template
        if n_probs:
            body["logprobs"] = True
            body["top_logprobs"] = n_probs
        return body

    def stream(self, request: Request) -> Iterator[RemoteToken | RemoteDone]:
        path = "/api/chat" if request.messages else "/api/generate"
        n_probs = max(0, min(request.n_probs, self.info().max_top_k))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        done = None
        for line in self.endpoint.stream(path, self._body(request, n_probs)):
            t = time.perf_counter()
            if not isinstance(line, dict):
                raise RemoteError(f"{self.endpoint.shown}{path} streamed a line that is not an object", kind="bad-json")
            if request.messages:
                message = line.get("message") if isinstance(line.get("message"), dict) else {}
                text = message.get("content")
            else:
                text = line.get("response")
            text = text if isinstance(text, str) else ""
            logprobs = line.get("logprobs")
            if isinstance(logprobs, list) and logprobs:
                for entry in logprobs:
                    if not isinstance(entry, dict):
                        raise RemoteError(f"{self.endpoint.shown}{path} streamed a logprob entry that is not an "
                                          "object", kind="bad-json")
                    key, piece = _piece(entry)
                    yield RemoteToken(key, piece, decoder.decode(piece), as_logprob(entry.get("logprob")),
                                      _candidates(entry.get("top_logprobs")), t)
            elif text:
                yield RemoteToken(None, text.encode("utf-8", "surrogatepass"), text, None, (), t)
            if line.get("done") is True:
                done = done_from_line(line)
                break
        if done is None:
            raise RemoteError(f"{self.endpoint.shown}{path} ended the stream before its \"done\" line: the server "
                              "stopped mid-answer", kind="died")
        yield done

    def probe(self, prompt: Sequence[Key] | str, n_probs: int) -> ProbeResult:
        if not isinstance(prompt, str):
            raise RemoteError(f"{self.name}: probing takes text here (Ollama has no token-id prompts)",
                              kind="unsupported")
        n = max(0, min(n_probs, self.info().max_top_k))
        if n <= 0:
            raise RemoteError(f"{self.endpoint.shown} returns no logprobs: probe mode needs them (Ollama 0.12.11+)",
                              kind="unsupported")
        body = {"model": self.model, "prompt": prompt, "raw": True, "stream": False,
                "options": {"num_predict": 1, "temperature": 0}, "logprobs": True, "top_logprobs": n}
        t0 = time.perf_counter()
        answer = self.endpoint.post_json("/api/generate", body)
        ms = (time.perf_counter() - t0) * 1000.0
        if not isinstance(answer, dict):
            raise RemoteError(f"{self.endpoint.shown}/api/generate answered a probe with no object", kind="bad-json")
        logprobs = answer.get("logprobs")
        entry = logprobs[0] if isinstance(logprobs, list) and logprobs and isinstance(logprobs[0], dict) else {}
        top = _candidates(entry.get("top_logprobs"))
        done = done_from_line(answer)
        if not top:
            if done.stopped_eog and not answer.get("response"):
                # Ollama sends no logprobs for an end-of-generation token
                raise RemoteError(f"{self.endpoint.shown} gave no probabilities at the end of generation",
                                  kind="unsupported")
            raise RemoteError(f"{self.endpoint.shown}/api/generate gave no top logprobs for the probe (logprobs "
                              "need Ollama 0.12.11 or later)", kind="unsupported")
        return ProbeResult(top, prompt_n=done.prompt_n, ms=ms)

    def metrics(self) -> MetricsSample:
        """Ollama has no Prometheus page: whether it answers, and which model is loaded; nothing else is known."""
        url = safe_url(self.endpoint.url)
        model = self._info.model if self._info is not None else ""
        try:
            self.endpoint.get_json("/api/version", timeout=5)
        except RemoteError as exc:
            return MetricsSample(url=url, backend=self.name, model=model, healthy=False, error=str(exc))
        try:
            running = self._models("/api/ps")
        except RemoteError:
            running = []
        if running:
            model = str(running[0].get("name") or running[0].get("model"))
        return MetricsSample(url=url, backend=self.name, model=model, healthy=True)
