"""Grammars (GBNF) for constrained output, on llama.cpp's own grammar engine.

A :class:`Grammar` is the filter behind the sampler chain's ``grammar`` stage
(:mod:`tui.sampling.samplers.grammar`): it says which candidate tokens may come next, and advances when a
token is accepted. ``llmtui serve`` builds one per request from ``response_format`` (a JSON schema through
:func:`gbnf_from_json_schema`, any JSON object through :data:`JSON_GBNF`) or a tool call's schema.

llama.cpp must never see a grammar or a token that would take the process down, so:

* the text is checked here first (:func:`check_gbnf`): llama.cpp's parser loops until memory runs out on a
  repetition ``{m,n}`` with m > n, and copies a literal once per repetition (a long literal repeated a
  thousand times is gigabytes), so both are refused with a one-line reason; so are the common mistakes
  (no root rule, a rule used but not defined, an unterminated string), whose reason llama.cpp would only
  print to stderr;
* a grammar llama.cpp refuses (it returns NULL) becomes an :class:`EngineError`;
* a token is accepted only after the grammar allowed it: accepting one it rejects throws a C++ exception
  through the C API, which aborts the process;
* every call checks that the model whose vocabulary the grammar uses is still loaded.

Not caught: a repetition of something that can be empty, nested (``(("a"?){12}){12}``), makes every step of
llama.cpp's grammar exponential (7 s at 12, hours at 40). Grammars converted from JSON schemas never have
one (a JSON value is never empty); GBNF text from an untrusted client may.
"""

from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from .binding import JSON_GBNF, grammar_rejects, grammar_sampler, json_schema_to_gbnf, ll
from .errors import EngineError

__all__ = ["JSON_GBNF", "MAX_GBNF_CHARS", "Grammar", "check_gbnf", "gbnf_from_json_schema"]

MAX_GBNF_CHARS = 256 * 1024  # grammars from JSON schemas of many tools are tens of KiB
MAX_REPEAT = 2000  # llama.cpp's MAX_REPETITION_THRESHOLD: it refuses a larger minimum and drops a larger maximum
_MAX_ELEMENTS = 2_000_000  # grammar elements (8 bytes each) the repetitions may expand to: 16 MB

# the GBNF tokens that matter for the check: comments, literals, character classes, token references,
# repetitions, rule definitions and the other items (one element each: a rule name, '.', a group's ')');
# rule names are letters, digits and '-' (llama.cpp's); anything else is left to llama.cpp's parser
_LEX = re.compile(r"""
    (?P<comment>\#[^\n]*)
  | (?P<literal>"(?:[^"\\]|\\.)*")
  | (?P<chars>\[(?:[^\]\\]|\\.)*\])
  | (?P<token><[^>]*>)
  | (?P<repeat>\{\s*(?P<lo>\d+)\s*(?:(?P<comma>,)\s*(?P<hi>\d+)?\s*)?\})
  | (?P<postfix>[*+?])
  | (?P<define>[A-Za-z0-9-]+)[ \t]*::=
  | (?P<item>[A-Za-z0-9-]+|[.)])
  | (?P<open>["\[<{])
""", re.VERBOSE | re.DOTALL)


def check_gbnf(gbnf: str, root: str = "root") -> str | None:
    """Why llama.cpp must not be given ``gbnf`` (one line), or None. Syntax errors that cannot hurt are left
    to llama.cpp, which names them."""
    if not isinstance(gbnf, str) or not gbnf.strip():
        return "the grammar is empty"
    if len(gbnf) > MAX_GBNF_CHARS:
        return f"the grammar has {len(gbnf):,} characters (at most {MAX_GBNF_CHARS:,})"
    if "\x00" in gbnf or "\x00" in root:
        return "the grammar contains a NUL character"
    if not re.fullmatch(r"[A-Za-z0-9-]+", root):
        return f"the root rule name {root!r} is not a rule name (letters, digits and '-')"
    defined: set[str] = set()
    used: dict[str, int] = {}  # rule name -> where it is first used
    elements = 0  # what llama.cpp's parser will build, in grammar elements
    last = 0  # elements of the item a repetition copies (a group is one: a reference to its rule)
    for m in _LEX.finditer(gbnf):
        kind = m.lastgroup
        if kind == "comment":
            continue
        if kind == "define":
            defined.add(m.group("define"))
            continue
        if kind == "open":
            what = {'"': "string", "[": "character class", "<": "token reference", "{": "repetition"}[m.group()]
            return f"line {_line(gbnf, m.start())}: an unterminated or malformed {what} at {m.group()!r}"
        if kind == "item" and m.group() not in ".)":
            used.setdefault(m.group(), m.start())
        if kind in ("literal", "chars", "token", "item"):
            last = len(m.group()) - 2 if kind in ("literal", "chars") else 1
            elements += last
        elif kind == "postfix":  # x* and x? leave a reference to a new rule, x+ a copy of x and one
            elements += 2 * last
            last = last + 1 if m.group() == "+" else 1
        else:  # {m}, {m,}, {m,n}: m copies inline, one rule with a copy per optional one
            if max(len(m.group("lo")), len(m.group("hi") or "")) > 9:
                return f"line {_line(gbnf, m.start())}: a repetition count in {m.group()[:30]!r} is too large"
            lo = int(m.group("lo"))
            hi = lo if m.group("comma") is None else (int(m.group("hi")) if m.group("hi") else None)
            if hi is not None and hi < lo:
                return f"line {_line(gbnf, m.start())}: the repetition {m.group()} has its maximum below its minimum"
            if lo > MAX_REPEAT:
                return (f"line {_line(gbnf, m.start())}: the repetition {m.group()} is above llama.cpp's limit "
                        f"of {MAX_REPEAT:,}")
            if hi is not None and hi > MAX_REPEAT:
                hi = None  # llama.cpp drops a maximum above its limit: {m,} (the text is then longer than asked)
            elements += last * (hi if hi is not None else lo + 1)
            last = last * lo + 1  # a repetition right after this one copies all of it ("x"{40}{40})
        if elements > _MAX_ELEMENTS:
            return (f"line {_line(gbnf, m.start())}: the grammar expands to more than {_MAX_ELEMENTS:,} elements "
                    "(long literals repeated many times)")
    if root not in defined:
        return f"there is no rule named {root!r} (the start rule: '{root} ::= ...')"
    for name, pos in used.items():
        if name not in defined:
            return f"line {_line(gbnf, pos)}: the rule {name!r} is used but never defined"
    return None


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def gbnf_from_json_schema(schema: dict[str, Any]) -> str:
    """GBNF for the JSON values ``schema`` (a JSON schema) allows: llama-cpp-python's converter (llama.cpp's
    ``json_schema_to_grammar``, in Python). Remote ``$ref`` are not fetched."""
    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
    except Exception as exc:  # the converter raises whatever it meets: a bad schema is the user's to fix
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise EngineError(f"grammar: cannot convert the JSON schema: {reason}") from None
    # JSON strings hold no raw control characters (RFC 8259 §7); this converter's char rule lets a newline in,
    # and a small model then wanders on inside an unclosed string. llama.cpp's own converter excludes them.
    return gbnf.replace(_LOOSE_CHAR, _JSON_CHAR)


_LOOSE_CHAR = r'char ::= [^"\\] |'
_JSON_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


class Grammar:
    """A GBNF grammar's state on ``engine``'s vocabulary: which tokens may come next (:meth:`allowed`), and
    the tokens chosen so far (:meth:`accept`). Not thread-safe; use it where the engine is used."""

    def __init__(self, engine: Any, gbnf: str, root: str = "root") -> None:
        problem = check_gbnf(gbnf, root)
        if problem:
            raise EngineError(f"grammar: {problem}")
        self._engine = engine
        self.n_vocab = int(engine.n_vocab)
        self.gbnf, self.root = gbnf, root
        try:
            self._ptr: Any = grammar_sampler(engine.handles().vocab, gbnf, root)
        except ValueError as exc:
            raise EngineError(f"grammar: llama.cpp refused it: {exc}") from None

    @classmethod
    def from_json_schema(cls, engine: Any, schema: dict[str, Any]) -> "Grammar":
        return cls(engine, gbnf_from_json_schema(schema))

    def _live(self) -> Any:
        if self._ptr is None:
            raise EngineError("grammar: it was closed")
        if getattr(self._engine, "closed", False):
            raise EngineError("grammar: the model it was built for is closed")
        return self._ptr

    def allowed(self, ids: np.ndarray, logits: np.ndarray | None = None) -> np.ndarray:
        """Which of the candidate ``ids`` the grammar allows next (bool mask, in their order). llama.cpp
        decides from the ids alone; ``logits`` is part of the chain's filter protocol and not read."""
        ptr = self._live()
        ids = np.asarray(ids)
        if len(ids) and (int(ids.min()) < 0 or int(ids.max()) >= self.n_vocab):
            raise EngineError(f"grammar: a candidate id is outside the vocabulary (0..{self.n_vocab - 1})")
        return ~grammar_rejects(ptr, ids)

    def allows(self, token: int) -> bool:
        return bool(self.allowed(np.array([token], dtype=np.int32))[0])

    def accept(self, token: int) -> None:
        """Advance past ``token``, which the grammar must allow (else EngineError, and the state is unchanged)."""
        token = int(token)
        if not self.allows(token):
            raise EngineError(f"grammar: token {token} is not allowed here; a chain with a grammar stage "
                              "only picks allowed tokens")
        ll.llama_sampler_accept(self._ptr, token)

    def reset(self) -> None:
        """Back to the start of the grammar (llama.cpp parses the text again)."""
        ll.llama_sampler_reset(self._live())

    def clone(self) -> "Grammar":
        """An independent copy in the same state (llama.cpp copies the parsed rules and the parse stacks)."""
        other = object.__new__(Grammar)
        other._engine, other.n_vocab, other.gbnf, other.root = self._engine, self.n_vocab, self.gbnf, self.root
        other._ptr = ll.llama_sampler_clone(self._live())
        return other

    def close(self) -> None:
        if self._ptr is not None:
            ll.llama_sampler_free(self._ptr)
            self._ptr = None

    def __enter__(self) -> "Grammar":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort: a request's grammar is dropped with its chain
        try:
            self.close()
        except Exception:
            pass
