"""The checks of every field the reader keeps from a recording (untrusted input).

Everything the reader keeps is checked here, where it enters, so nothing after it (the replay,
verify, fork, the exports, the panels) meets a wrong type, a NaN or a token id outside the
vocabulary: llama.cpp aborts the whole process on one of those.

Explicit checks, not pydantic: a step holds ~30 fields and ~100 list elements; these checks test
a whole list at once with builtins that run in C (set(map(type, ids)), min, max). Measured on
10,000 real steps: the checks cost ~0.2 s (reading goes from ~0.62 s to ~0.85 s), a strict
pydantic TypeAdapter of the same step ~0.45 s, and it would still need a second pass for the
vocabulary bound (n_vocab comes from the header, not from a schema) and rewording of its errors.
Every message names the field, on one line.

:class:`BadField` is the one error; :func:`check_header`, :func:`step_from`,
:func:`pieces_from`, :func:`check_branch`, :func:`check_event` and :func:`check_footer` take one
record each (how a branch fits the tree read so far is the reader's check); :func:`shown` and
:func:`clipped` put a value from the file into a message.
"""

from __future__ import annotations

import base64
import math
import reprlib
import sys
from typing import Any

import numpy as np

from ..engine.errors import EngineError
from ..engine.loop import Step
from ..engine.settings import CACHE_TYPES, MAX_CTX, SEED_MAX, EngineSettings
from ..engine.tree import ORIGINS
from ..safe_text import visible
from ..sampling.presets import PresetError, validate_specs
from ..sampling.trace import SampleTrace, StageTrace

_FLOAT_MAX = sys.float_info.max
_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1
_PROB = (-1e-6, 1.0 + 1e-6)  # probabilities are float sums: 1.0000000000000002 is still one
_NUMBER = frozenset({int, float})  # JSON's 1 is as good as 1.0; bool (a subclass of int) is not
_INT_ONLY = frozenset({int})
_MISSING = object()


class BadField(ValueError):
    """One field of a record cannot be used; the message names it."""


_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 40
_repr.maxlist = _repr.maxdict = 4
_repr.maxlevel = 2


def shown(value: Any) -> str:
    """A value from the file in a message: short, one line, safe for a terminal."""
    return visible(_repr.repr(value))


def clipped(text: str, limit: int = 200) -> str:
    """Someone else's message about a value from the file: it may quote all of it."""
    return visible(text if len(text) <= limit else text[:limit] + "…")


def _get(rec: dict[str, Any], key: str, where: str) -> Any:
    value = rec.get(key, _MISSING)
    if value is _MISSING:
        raise BadField(f"{where}{key}: missing")
    return value


def _range(lo: float, hi: float) -> str:
    if hi >= _INT64_MAX:  # no upper bound worth naming
        return f"≥ {lo:g}" if isinstance(lo, float) else f"≥ {lo:,}"
    return f"in {lo:g}..{hi:g}" if isinstance(lo, float) or isinstance(hi, float) else f"in {lo:,}..{hi:,}"


def _int(value: Any, name: str, lo: int = 0, hi: int = _INT64_MAX) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise BadField(f"{name}: expected a whole number {_range(lo, hi)}, got {shown(value)}")
    return value


def _float(value: Any, name: str, lo: float = -_FLOAT_MAX, hi: float = _FLOAT_MAX) -> float:
    """A number in lo..hi; NaN never (it fails every comparison), an infinity only when lo or hi is one."""
    if (type(value) is not float and type(value) is not int) or not lo <= value <= hi:
        what = "a probability (0..1)" if (lo, hi) == _PROB else f"a number {_range(lo, hi)}"
        raise BadField(f"{name}: expected {what}, got {shown(value)}")
    return float(value)


def _prob(value: Any, name: str) -> float:
    return _float(value, name, *_PROB)


def _str(value: Any, name: str) -> str:
    if type(value) is not str:
        raise BadField(f"{name}: expected text, got {shown(value)}")
    return value


def _bool(value: Any, name: str) -> bool:
    if type(value) is not bool:
        raise BadField(f"{name}: expected true or false, got {shown(value)}")
    return value


def _dict(value: Any, name: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise BadField(f"{name}: expected an object, got {shown(value)}")
    return value


def _list(value: Any, name: str) -> list[Any]:
    if type(value) is not list:
        raise BadField(f"{name}: expected a list, got {shown(value)}")
    return value


def _ids(value: Any, name: str, n_vocab: int) -> list[int]:
    """A list of token ids of this model: 0 ≤ id < n_vocab."""
    if type(value) is not list:
        raise BadField(f"{name}: expected a list of token ids, got {shown(value)}")
    if value and (set(map(type, value)) != _INT_ONLY or min(value) < 0 or max(value) >= n_vocab):
        i, bad = next((i, x) for i, x in enumerate(value) if type(x) is not int or not 0 <= x < n_vocab)
        raise BadField(f"{name}[{i}]: {shown(bad)} is not a token id of this model (0..{n_vocab - 1:,})")
    return value


def _token(value: Any, name: str, n_vocab: int) -> int:
    if type(value) is not int or not 0 <= value < n_vocab:
        raise BadField(f"{name}: {shown(value)} is not a token id of this model (0..{n_vocab - 1:,})")
    return value


def _numbers(value: Any, name: str, lo: float, hi: float) -> list[float]:
    """A list of numbers in lo..hi, none NaN."""
    if type(value) is not list:
        raise BadField(f"{name}: expected a list of numbers, got {shown(value)}")
    if value:
        try:
            ok = (set(map(type, value)) <= _NUMBER and not any(map(math.isnan, value))
                  and lo <= min(value) and max(value) <= hi)
        except OverflowError:  # an integer too large for a float
            ok = False
        if not ok:
            for i, x in enumerate(value):
                _float(x, f"{name}[{i}]", lo, hi)
    return value


def step_from(rec: dict[str, Any], n_vocab: int) -> tuple[Step, tuple[int, int]]:
    """A step record → (Step, (rss, kv_bytes)); BadField names the first field that cannot be used."""
    try:
        return _checked_step(rec, n_vocab)
    except KeyError as exc:  # rec[...] below: cheaper than a .get per field on the happy path
        raise BadField(f"{exc.args[0]}: missing") from None


def _checked_step(rec: dict[str, Any], n_vocab: int) -> tuple[Step, tuple[int, int]]:
    token = _token(rec["token"], "token", n_vocab)
    try:
        piece = base64.b64decode(_str(rec["piece"], "piece"), validate=True)
    except ValueError:  # binascii.Error, or a str that is not ASCII
        raise BadField(f"piece: not base64: {shown(rec['piece'])}") from None
    prob = _unknown_or(_prob, rec["prob"], "prob")
    top = _dict(rec["top"], "top")
    top_ids = _ids(_get(top, "token", "top."), "top.token", n_vocab)
    top_logits = _numbers(_get(top, "logit", "top."), "top.logit", -math.inf, _FLOAT_MAX)  # -inf: a banned token
    top_p = _numbers(_get(top, "p", "top."), "top.p", *_PROB)
    top_p_after = _numbers(_get(top, "p_after", "top."), "top.p_after", *_PROB)
    if not len(top_ids) == len(top_logits) == len(top_p) == len(top_p_after):  # zipped by the exports and panels
        raise BadField(f"top: lists of different lengths ({len(top_ids)}, {len(top_logits)}, {len(top_p)}, "
                   f"{len(top_p_after)})")
    stages = []
    for k, stage in enumerate(_list(rec["stages"], "stages")):
        if type(stage) is not list or len(stage) != 7:
            raise BadField(f"stages[{k}]: expected [name, n_in, n_out, mass_removed, ids, probs, note], "
                       f"got {shown(stage)}")
        try:
            stages.append(_stage(stage, n_vocab))
        except BadField as exc:  # the stage's number only now: formatting it for every stage costs
            raise BadField(f"stages[{k}].{exc}") from None
    draw = rec["draw"]
    trace = SampleTrace(
        token=token, prob=prob, entropy=_unknown_or(_float, rec["entropy"], "entropy", 0.0),
        top_ids=np.asarray(top_ids, dtype=np.int32), top_logits=np.asarray(top_logits, dtype=np.float32),
        top_p_before=np.asarray(top_p, dtype=np.float64), top_p_after=np.asarray(top_p_after, dtype=np.float64),
        stages=tuple(stages), n_final=_int(rec["n_final"], "n_final", 0, n_vocab),
        draw=None if draw is None else _prob(draw, "draw"),
        draw_lo=_prob(rec["draw_lo"], "draw_lo"), draw_hi=_prob(rec["draw_hi"], "draw_hi"),
        raw_logit=_unknown_or(_float, rec["raw_logit"], "raw_logit", -math.inf),
        raw_p=_unknown_or(_prob, rec["raw_p"], "raw_p"),
        top_k_only=_int(rec.get("top_k_only", 0), "top_k_only", 0, n_vocab),
        server_sampled=_bool(rec.get("server_sampled", False), "server_sampled"),
    )
    step = Step(
        index=_int(rec["i"], "i", 0, _INT32_MAX), token=token, piece=piece, text=_str(rec["text"], "text"),
        prob=prob, trace=trace, decode_ms=_float(rec["decode_ms"], "decode_ms", 0.0),
        sample_ms=_float(rec["sample_ms"], "sample_ms", 0.0), n_past=_int(rec["n_past"], "n_past", 0, MAX_CTX),
        n_ctx=_int(rec["n_ctx"], "n_ctx", 1, MAX_CTX), is_eog=_bool(rec["eog"], "eog"), t=_float(rec["t"], "t"),
        forced=_bool(rec.get("forced", False), "forced"),
    )
    return step, (_int(rec.get("rss", 0), "rss"), _int(rec.get("kv_bytes", 0), "kv_bytes"))


def _unknown_or(check: Any, value: Any, name: str, *bounds: float) -> float:
    """null (a remote server did not give this figure) reads back as NaN; anything else is checked."""
    return math.nan if value is None else check(value, name, *bounds)


def _stage(stage: list[Any], n_vocab: int) -> StageTrace:
    name, n_in, n_out, mass, ids, probs, note = stage
    trace = StageTrace(_str(name, "name"), _int(n_in, "n_in", 0, n_vocab), _int(n_out, "n_out", 0, n_vocab),
                       _prob(mass, "mass_removed"), tuple(_ids(ids, "ids", n_vocab)),
                       tuple(_numbers(probs, "probs", *_PROB)), _str(note, "note"))
    if len(ids) != len(probs):
        raise BadField(f"probs: {len(ids)} ids but {len(probs)} probabilities")
    return trace


def pieces_from(rec: dict[str, Any], n_vocab: int) -> dict[int, bytes]:
    pieces: dict[int, bytes] = {}
    for key, value in _dict(_get(rec, "map", ""), "map").items():
        # int() would also take " 12", "1_2" and other scripts' digits
        if not (key.isascii() and key.isdigit() and len(key) <= 10) or not int(key) < n_vocab:
            raise BadField(f"map: {shown(key)} is not a token id of this model (0..{n_vocab - 1:,})")
        try:
            pieces[int(key)] = base64.b64decode(_str(value, f"map[{key}]"), validate=True)
        except ValueError:  # binascii.Error, or a str that is not ASCII
            raise BadField(f"map[{key}]: not base64: {shown(value)}") from None
    return pieces


def _check_preset(value: Any, name: str) -> None:
    """A recorded preset: what a preset file may hold (validate_specs checks every parameter's type
    and range, numbers finite, whole numbers within llama.cpp's int32)."""
    preset = _dict(value, name)
    _str(_get(preset, "name", f"{name}."), f"{name}.name")
    if "description" in preset:
        _str(preset["description"], f"{name}.description")
    try:
        validate_specs(_list(_get(preset, "samplers", f"{name}."), f"{name}.samplers"), where=name)
    except PresetError as exc:
        raise BadField(clipped(str(exc))) from None


def check_header(head: dict[str, Any]) -> None:
    """Every header field the replay, verify, fork and the exports use."""
    for key in ("app_version", "created"):
        if key in head:
            _str(head[key], key)
    model = _dict(_get(head, "model", ""), "model")
    for key in ("name", "path", "arch", "quant"):
        _str(_get(model, key, "model."), f"model.{key}")
    n_vocab = _int(_get(model, "n_vocab", "model."), "model.n_vocab", 1, _INT32_MAX)
    if "file_size" in model:
        _int(model["file_size"], "model.file_size")
    if model.get("fingerprint") is not None:
        _str(model["fingerprint"], "model.fingerprint")
    engine = _dict(_get(head, "engine", ""), "engine")
    for key in ("type_k", "type_v", "flash_attn"):  # EngineSettings looks these up in a dict: hashable first
        if key in engine:
            _str(engine[key], f"engine.{key}")
    try:
        EngineSettings.from_dict(engine)
    except EngineError as exc:
        raise BadField(f"engine.{clipped(str(exc))}") from None  # its messages start with the setting's name
    _int(_get(head, "n_ctx", ""), "n_ctx", 1, MAX_CTX)
    if "kv" in head:
        kv = _dict(head["kv"], "kv")
        if "bytes_per_token" in kv:
            _float(kv["bytes_per_token"], "kv.bytes_per_token", 0.0, float(2**40))
        if "allocated" in kv:
            _int(kv["allocated"], "kv.allocated")
        for key in ("type_k", "type_v"):
            if key in kv and (type(kv[key]) is not str or kv[key] not in CACHE_TYPES):
                raise BadField(f"kv.{key}: expected one of {', '.join(CACHE_TYPES)}, got {shown(kv[key])}")
    _check_preset(_get(head, "preset", ""), "preset")
    _int(_get(head, "seed", ""), "seed", -1, SEED_MAX)
    _str(_get(head, "prompt", ""), "prompt")
    _ids(_get(head, "prompt_tokens", ""), "prompt_tokens", n_vocab)
    _ids(head.get("history", []), "history", n_vocab)
    if "max_tokens" in head:
        _int(head["max_tokens"], "max_tokens", 0, _INT32_MAX)
    if "ignore_eos" in head:
        _bool(head["ignore_eos"], "ignore_eos")
    if head.get("parent") is not None:
        parent = _dict(head["parent"], "parent")
        if "file" in parent:
            _str(parent["file"], "parent.file")
        if "fork_step" in parent:
            _int(parent["fork_step"], "parent.fork_step", 0, _INT32_MAX)
        if "branch" in parent:  # forked from a recorded branch other than the run's line
            _int(parent["branch"], "parent.branch", 0, _INT32_MAX)
    if head.get("retrieval") is not None:  # a retrieval-augmented turn's chunks (what its prompt carried)
        retrieval = _dict(head["retrieval"], "retrieval")
        _str(_get(retrieval, "question", "retrieval."), "retrieval.question")
        for i, chunk in enumerate(_list(_get(retrieval, "chunks", "retrieval."), "retrieval.chunks")):
            c = _dict(chunk, f"retrieval.chunks[{i}]")
            _str(_get(c, "file", f"retrieval.chunks[{i}]."), f"retrieval.chunks[{i}].file")
            _str(_get(c, "text", f"retrieval.chunks[{i}]."), f"retrieval.chunks[{i}].text")
            _float(_get(c, "score", f"retrieval.chunks[{i}]."), f"retrieval.chunks[{i}].score", -1.0, 1.0)
    check_remote(head)
    if "ab" in head:
        check_ab(head["ab"], n_vocab)


_AB_MODES = ("presets", "models")


def check_ab(value: Any, n_vocab: int) -> None:
    """An A/B run's header block: its mode, the two sides' labels, side B's preset, seed and model (two
    models share one vocabulary: B's is the header's)."""
    ab = _dict(value, "ab")
    mode = _get(ab, "mode", "ab.")
    if mode not in _AB_MODES:
        raise BadField(f"ab.mode: expected presets or models, got {shown(mode)}")
    for key in ("label_a", "label_b"):
        _str(_get(ab, key, "ab."), f"ab.{key}")
    _check_preset(_get(ab, "preset_b", "ab."), "ab.preset_b")
    if "seed_b" in ab:
        _int(ab["seed_b"], "ab.seed_b", -1, SEED_MAX)
    model = ab.get("model_b")
    if model is not None:
        model = _dict(model, "ab.model_b")
        for key in ("name", "path", "arch", "quant"):
            _str(_get(model, key, "ab.model_b."), f"ab.model_b.{key}")
        vocab = _get(model, "n_vocab", "ab.model_b.")
        if type(vocab) is not int or vocab != n_vocab:
            raise BadField(f"ab.model_b.n_vocab: {shown(vocab)}, but side A's model has {n_vocab:,} "
                           "tokens (A/B of two models needs one vocabulary)")
        if model.get("fingerprint") is not None:
            _str(model["fingerprint"], "ab.model_b.fingerprint")


def check_branch(rec: dict[str, Any]) -> dict[str, Any]:
    """A branch line's own fields (version 2); where it leaves its parent is checked against the tree read
    so far by the reader."""
    _int(_get(rec, "id", ""), "id", 1, _INT32_MAX)  # branch 0 is the first run's: never introduced
    _int(_get(rec, "parent", ""), "parent", 0, _INT32_MAX)
    _int(_get(rec, "fork", ""), "fork", 0, _INT32_MAX)
    origin = _get(rec, "origin", "")
    if origin not in ORIGINS:
        raise BadField(f"origin: expected one of {', '.join(ORIGINS)}, got {shown(origin)}")
    if "preset" in rec:
        _check_preset(rec["preset"], "preset")
    if "seed" in rec:
        _int(rec["seed"], "seed", -1, SEED_MAX)
    if "max_tokens" in rec:
        _int(rec["max_tokens"], "max_tokens", 0, _INT32_MAX)
    return rec


def check_remote(head: dict[str, Any]) -> None:
    """A remote run's header (tui.remote): which server, what it exposed."""
    if "remote" not in head:
        return
    remote = _dict(head["remote"], "remote")
    for key in ("backend", "url", "model"):
        _str(_get(remote, key, "remote."), f"remote.{key}")
    if "exposed" in remote:
        for key, value in _dict(remote["exposed"], "remote.exposed").items():
            _bool(value, f"remote.exposed.{clipped(key, 40)}")


def check_event(rec: dict[str, Any], n_vocab: int) -> dict[str, Any]:
    _str(_get(rec, "kind", ""), "kind")
    _int(_get(rec, "at_step", ""), "at_step", 0, _INT32_MAX)
    if "preset" in rec:
        _check_preset(rec["preset"], "preset")
    if "token" in rec:
        _token(rec["token"], "token", n_vocab)
    for key in ("reason", "error", "lab"):
        if rec.get(key) is not None:
            _str(rec[key], key)
    if "branch" in rec:  # version 2: whether it is a branch of this tree is the reader's check
        _int(rec["branch"], "branch", 0, _INT32_MAX)
    if rec["kind"] == "ab":
        _ab_figures(rec)
    return rec


def _ab_figures(rec: dict[str, Any]) -> None:
    """An A/B step's figures (what the split view plots): null where a side had stopped."""
    kl = _get(rec, "kl", "")
    if kl is not None:
        _float(kl, "kl")  # nats; float sums can leave a hair below zero
    for key in ("entropy_a", "entropy_b"):
        value = _get(rec, key, "")
        if value is not None:
            _float(value, key, 0.0)
    agree = _get(rec, "top1_agree", "")
    if agree is not None:
        _bool(agree, "top1_agree")
    _bool(_get(rec, "diverged", ""), "diverged")
    _int(rec.get("decodes", 0), "decodes", 0, _INT32_MAX)


def check_footer(rec: dict[str, Any]) -> dict[str, Any]:
    if "steps" in rec:
        _int(rec["steps"], "steps", 0, _INT32_MAX)
    for key in ("stop_reason", "text", "error"):
        if rec.get(key) is not None:
            _str(rec[key], key)
    if "summary" in rec:
        _dict(rec["summary"], "summary")
    return rec
