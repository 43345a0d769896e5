"""Samplers that move logits of chosen tokens: logit bias, repetition penalties, DRY."""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..base import Sampler
from ..candidates import F32, Candidates
from ..schema import BuildContext, Native, Param
from ..vocab import DryVocab


class LogitBias(Sampler):
    """Add a fixed bias to chosen tokens' logits (-inf bans a token).

    llama.cpp leaves the ``sorted`` flag alone even though a bias can break
    the order; so do we.
    """

    name = "logit_bias"
    help = "add a bias to chosen token ids"
    schema = {"bias": Param(dict, {}, help="token id = bias (-inf bans the token)")}
    native = Native("logit_bias", ("n_vocab", "len(bias)", "bias"))
    changes_logits = True

    def __init__(self, bias: Mapping[int, float] | None = None) -> None:
        self.bias = {int(k): float(v) for k, v in (bias or {}).items()}
        self._tok = np.fromiter(self.bias.keys(), dtype=np.int64, count=len(self.bias))
        self._val = np.fromiter(self.bias.values(), dtype=F32, count=len(self.bias))

    def apply(self, cur: Candidates) -> None:
        if not self.bias:
            return
        if cur.is_full_vocab:
            ok = (self._tok >= 0) & (self._tok < len(cur))
            pos, val = self._tok[ok], self._val[ok]
        else:
            order = np.argsort(cur.ids, kind="stable")
            where = np.minimum(np.searchsorted(cur.ids[order], self._tok), len(order) - 1)
            hit = cur.ids[order][where] == self._tok
            pos, val = order[where[hit]], self._val[hit]
        if len(pos):
            cur.edit(pos, (cur.logits[pos] + val).astype(F32))

    def params(self) -> dict[str, Any]:
        return {"bias": {str(k): v for k, v in self.bias.items()}}


class Penalties(Sampler):
    """Repetition (×/÷ repeat), frequency (−count·freq) and presence (−present) penalties
    over the last ``last_n`` accepted tokens."""

    name = "penalties"
    help = "repetition / frequency / presence penalties"
    schema = {"last_n": Param(int, 64, -1, None, "-1: the context size", minus_one_is_n_ctx=True),
              "repeat": Param(float, 1.0, 0.0, None, "divides positive logits: above 0", lo_open=True),
              "frequency": Param(float, 0.0, help="subtracted once per occurrence"),
              "presence": Param(float, 0.0, help="subtracted once if present")}
    native = Native("penalties", ("n_vocab", "last_n", "repeat", "frequency", "presence"))
    changes_logits = True

    def __init__(self, last_n: int = 64, repeat: float = 1.0, frequency: float = 0.0, presence: float = 0.0) -> None:
        self.last_n = max(int(last_n), 0)
        self.repeat, self.frequency, self.presence = F32(repeat), F32(frequency), F32(presence)
        self.prev: deque[int] = deque()
        self.counts: Counter[int] = Counter()

    @property
    def disabled(self) -> bool:
        return self.last_n == 0 or (self.repeat == 1 and self.frequency == 0 and self.presence == 0)

    def accept(self, token: int) -> None:
        if self.last_n == 0:
            return
        self.counts[token] += 1
        if len(self.prev) >= self.last_n:
            old = self.prev.popleft()
            self.counts[old] -= 1
            if self.counts[old] == 0:
                del self.counts[old]
        self.prev.append(token)

    def reset(self) -> None:
        self.prev.clear()
        self.counts.clear()

    def apply(self, cur: Candidates) -> None:
        if self.disabled:
            return
        if self.counts:
            n = len(self.counts)
            toks = np.fromiter(self.counts.keys(), dtype=np.int64, count=n)
            cnts = np.fromiter(self.counts.values(), dtype=F32, count=n)
            if cur.is_full_vocab:
                pos, cnt = toks, cnts
            else:
                order = np.argsort(cur.ids, kind="stable")
                where = np.searchsorted(cur.ids[order], toks)
                where = np.minimum(where, len(order) - 1)
                hit = cur.ids[order][where] == toks
                pos, cnt = order[where[hit]], cnts[hit]
            sub = cur.logits[pos]  # float32 throughout, as in C
            if self.repeat != 1:
                sub = np.where(sub <= 0, sub * self.repeat, sub / self.repeat)
            if self.frequency != 0 or self.presence != 0:
                sub = sub - (cnt * self.frequency + self.presence)
            if len(pos):
                cur.edit(pos, sub)
        cur.sorted = False

    def params(self) -> dict[str, Any]:
        return {"last_n": self.last_n, "repeat": float(self.repeat), "frequency": float(self.frequency),
                "presence": float(self.presence)}


class Dry(Sampler):
    """DRY ("Don't Repeat Yourself"): penalise tokens that would extend a repeated sequence.

    A port of llama.cpp's port of koboldcpp's implementation: restart sequences
    from the breaker strings, a reverse Z-algorithm over the last tokens, then
    ``multiplier * base ** (length - allowed_length)`` off each extending token.
    """

    name = "dry"
    help = "don't repeat yourself"
    schema = {"multiplier": Param(float, 0.8, 0.0, None, "penalty scale (0: off)"),
              "base": Param(float, 1.75, 0.0, None, "penalty grows as base ** (length - allowed_length)"),
              "allowed_length": Param(int, 2, 0, None, "repeats up to this long are free"),
              "penalty_last_n": Param(int, 64, -1, None, "-1: the context size", minus_one_is_n_ctx=True),
              "sequence_breakers": Param(list, ["\n", ":", '"', "*"], help="strings that end a repeat")}
    native = Native("dry", ("vocab", "multiplier", "base", "allowed_length", "penalty_last_n", "sequence_breakers",
                            "len(sequence_breakers)"))
    changes_logits = True

    def __init__(
        self,
        vocab: DryVocab | None = None,
        multiplier: float = 0.8,
        base: float = 1.75,
        allowed_length: int = 2,
        penalty_last_n: int = 64,
        sequence_breakers: Sequence[str] = ("\n", ":", '"', "*"),
        n_ctx: int = 4096,
    ) -> None:
        self.multiplier, self.base = F32(multiplier), F32(base)
        self.allowed_length = int(allowed_length)
        # like common/arg.cpp: -1 means the context size
        self.penalty_last_n = max(n_ctx if penalty_last_n == -1 else int(penalty_last_n), 0)
        self.sequence_breakers = list(sequence_breakers)
        self.enabled = self.multiplier != 0 and self.base >= 1 and self.penalty_last_n != 0
        self.processed = vocab.breakers(self.sequence_breakers) if (vocab and self.enabled) else {}
        self.last_tokens: deque[int] = deque(maxlen=self.penalty_last_n or None)

    @classmethod
    def from_params(cls, ctx: BuildContext, params: Mapping[str, Any]) -> Sampler:
        return cls(ctx.dry_vocab, n_ctx=ctx.n_ctx, **cls.resolve(ctx, params))

    def accept(self, token: int) -> None:
        if self.enabled:
            self.last_tokens.append(token)

    def reset(self) -> None:
        self.last_tokens.clear()

    def clone(self) -> Sampler:
        other = Dry.__new__(Dry)
        other.__dict__.update(self.__dict__)
        other.last_tokens = deque(self.last_tokens, maxlen=self.last_tokens.maxlen)
        return other

    def apply(self, cur: Candidates) -> None:
        if not self.enabled:
            return
        last_n = min(len(self.last_tokens), self.penalty_last_n)
        if last_n <= self.allowed_length:
            return
        toks = list(self.last_tokens)

        def rat(i: int) -> int:  # ring_buffer::rat: i-th token from the end
            return toks[len(toks) - 1 - i]

        # step 1: restart sequences limit the repetition length
        rep_limit = last_n
        for i in range(last_n):
            seqs = self.processed.get(rat(i))
            if not seqs:
                continue
            longest = -1
            for tail in seqs:
                n = len(tail)
                if n > longest and n <= i and all(tail[o] == rat(i - o - 1) for o in range(n)):
                    longest = n
            if longest >= 0:
                rep_limit = i - longest
                break
        if rep_limit < self.allowed_length:
            return
        # step 2: reverse Z-algorithm
        repeat = [0] * last_n
        last = last_n - 1
        rt = lt = 0
        for k in range(1, last_n):
            if k > rt:
                n = 0
                while n + k < last_n and rat(n) == rat(n + k):
                    n += 1
                repeat[last - k] = min(n, rep_limit)
                if n > 0:
                    lt, rt = k, k + n - 1
            else:
                p = k - lt
                right = rt - k + 1
                if repeat[last - p] < right:
                    repeat[last - k] = min(repeat[last - p], rep_limit)
                else:
                    i = rt + 1
                    while i < last_n and rat(i) == rat(i - k):
                        i += 1
                    repeat[last - k] = min(i - k, rep_limit)
                    lt, rt = k, i - 1
        # step 3: the longest repeat each next token would extend
        max_repeat: dict[int, int] = {}
        for i in range(last_n - 1):
            length = repeat[i]
            if length >= self.allowed_length:
                tok = rat(last_n - 2 - i)
                if max_repeat.get(tok, -1) < length:
                    max_repeat[tok] = length
        if not max_repeat:
            cur.sorted = False
            return
        # step 4: penalties (not on single-token sequence breakers)
        max_exp = int(F32(88.7228391) / F32(math.log(float(self.base)))) if self.base > F32(1.000001) else 0
        toks_arr, pens = [], []
        for tok, length in max_repeat.items():
            if [] in self.processed.get(tok, []):
                continue
            e = length - self.allowed_length
            if max_exp > 0 and e > max_exp:
                e = max_exp
            toks_arr.append(tok)
            pens.append(F32(self.multiplier * F32(math.pow(float(self.base), e))))
        if toks_arr:
            if cur.is_full_vocab:
                pos = np.array([t for t in toks_arr if 0 <= t < len(cur)], dtype=np.int64)
                pen = np.array([p for t, p in zip(toks_arr, pens) if 0 <= t < len(cur)], dtype=F32)
            else:
                where = {t: i for i, t in enumerate(cur.ids.tolist())}
                pairs = [(where[t], p) for t, p in zip(toks_arr, pens) if t in where]
                pos = np.array([i for i, _ in pairs], dtype=np.int64)
                pen = np.array([p for _, p in pairs], dtype=F32)
            if len(pos):
                cur.edit(pos, (cur.logits[pos] - pen).astype(F32))
            self.last_note = f"penalised {len(toks_arr)} token(s)"
        cur.sorted = False

    def params(self) -> dict[str, Any]:
        return {"multiplier": float(self.multiplier), "base": float(self.base),
                "allowed_length": self.allowed_length, "penalty_last_n": self.penalty_last_n,
                "sequence_breakers": self.sequence_breakers}
