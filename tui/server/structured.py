"""Structured output for the API: ``response_format``, llama-server's ``grammar`` / ``json_schema`` fields and
tool calls, each turned into a GBNF grammar that a stage of the sampler chain enforces (llama.cpp's own
grammar engine: :mod:`tui.engine.grammar`), and the model's constrained output read back as OpenAI's
``tool_calls``.

A request that cannot be honoured is a 400 that says why, never a silent 200 with prose.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from .service import ApiError

MAX_TOOLS = 32
MAX_GRAMMAR_CHARS = 64 * 1024


@dataclass(frozen=True, slots=True)
class Structure:
    """What a request asks the output to be: a GBNF grammar (None: free text), and the tools it may call."""

    grammar: str | None = None
    tools: tuple[dict[str, Any], ...] = ()  # the functions, as the request gave them
    tool_mode: str = "none"  # none | auto | required | a function's name
    system_note: str = ""  # what the model is told of the tools (its chat template cannot say it)


def _schema_grammar(schema: Any, param: str) -> str:
    from ..engine.grammar import gbnf_from_json_schema

    if not isinstance(schema, dict):
        raise ApiError(400, f"{param}: expected a JSON schema object", param=param)
    try:
        return gbnf_from_json_schema(schema)
    except Exception as exc:  # the converter's own errors: a schema it cannot express
        raise ApiError(400, f"{param}: this JSON schema cannot be turned into a grammar: {exc}", param=param) from None


def response_grammar(response_format: Any, grammar: Any = None, json_schema: Any = None) -> str | None:
    """The grammar for ``response_format`` ({"type": "text" | "json_object" | "json_schema"}), or for
    llama-server's ``grammar`` (GBNF) / ``json_schema`` fields; None: free text."""
    given = [name for name, value in (("response_format", response_format), ("grammar", grammar),
                                      ("json_schema", json_schema)) if value is not None]
    if len(given) > 1:
        raise ApiError(400, f"give one of {', '.join(given)}: they all constrain the same output", param=given[1])
    if grammar is not None:
        if not isinstance(grammar, str) or not grammar.strip() or len(grammar) > MAX_GRAMMAR_CHARS:
            raise ApiError(400, f"grammar: expected a GBNF grammar of at most {MAX_GRAMMAR_CHARS:,} characters",
                           param="grammar")
        return grammar
    if json_schema is not None:
        return _schema_grammar(json_schema, "json_schema")
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise ApiError(400, "response_format: expected an object like {\"type\": \"json_object\"}",
                       param="response_format")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        from ..engine.grammar import JSON_GBNF

        return JSON_GBNF
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        return _schema_grammar(schema if schema is not None else {"type": "object"}, "response_format.json_schema")
    raise ApiError(400, f"response_format.type {kind!r} is not one of text, json_object, json_schema",
                   param="response_format.type")


def _functions(tools: Any) -> list[dict[str, Any]]:
    if not isinstance(tools, list) or not tools or len(tools) > MAX_TOOLS:
        raise ApiError(400, f"tools: expected 1 to {MAX_TOOLS} tools", param="tools")
    out = []
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) and tool.get("type") == "function" else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name or len(name) > 64:
            raise ApiError(400, f"tools[{i}]: expected {{\"type\": \"function\", \"function\": {{\"name\", "
                           "\"parameters\"}}}}", param=f"tools[{i}]")
        params = fn.get("parameters") if isinstance(fn.get("parameters"), dict) else {"type": "object"}
        out.append({"name": name, "description": str(fn.get("description") or ""), "parameters": params})
    return out


def tool_structure(tools: Any, tool_choice: Any) -> Structure:
    """Tools as a grammar: a call is ``{"name": …, "arguments": {…}}`` with the arguments the function's JSON
    schema allows. ``required`` / a named function: the output must be a call; ``auto``: a call, or plain text
    (that does not start with ``{``); ``none``: the tools are not offered."""
    if tools is None:
        if tool_choice not in (None, "none"):
            raise ApiError(400, "tool_choice without tools", param="tool_choice")
        return Structure()
    functions = _functions(tools)
    if tool_choice is None:
        mode = "auto"
    elif tool_choice in ("none", "auto", "required"):
        mode = tool_choice
    elif isinstance(tool_choice, dict) and isinstance(tool_choice.get("function"), dict):
        mode = str(tool_choice["function"].get("name"))
        if mode not in {f["name"] for f in functions}:
            raise ApiError(400, f"tool_choice names {mode!r}, which is not among the tools", param="tool_choice")
    else:
        raise ApiError(400, "tool_choice: none, auto, required, or {\"type\": \"function\", \"function\": "
                       "{\"name\": …}}", param="tool_choice")
    if mode == "none":
        return Structure()
    offered = [f for f in functions if mode in ("auto", "required") or f["name"] == mode]
    calls = [{"type": "object", "properties": {"name": {"const": f["name"]}, "arguments": f["parameters"]},
              "required": ["name", "arguments"], "additionalProperties": False} for f in offered]
    call = _schema_grammar(calls[0] if len(calls) == 1 else {"anyOf": calls}, "tools")
    grammar = call
    if mode == "auto":  # the call's rules, and a second way out: text that is not a JSON object
        grammar = call.replace("root ::=", "call ::=", 1) + '\nroot ::= call | text\ntext ::= [^{] [^\\x00]*\n'
    listing = "\n".join(f"- {f['name']}: {f['description']} arguments (JSON schema): "
                        f"{json.dumps(f['parameters'], separators=(',', ':'))}" for f in offered)
    note = ("You can call these functions:\n" + listing + "\nTo call one, answer with only a JSON object "
            "{\"name\": <function name>, \"arguments\": {…}}" + (", or answer in plain text." if mode == "auto"
                                                                 else "."))
    return Structure(grammar=grammar, tools=tuple(offered), tool_mode=mode, system_note=note)


def tool_calls(text: str, structure: Structure) -> list[dict[str, Any]] | None:
    """The output as OpenAI's ``tool_calls`` when it is a call (None: plain text)."""
    if not structure.tools or not text.lstrip().startswith("{"):
        return None
    try:
        call = json.loads(text)
    except ValueError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return None
    return [{"id": "call_" + uuid.uuid4().hex[:24], "type": "function",
             "function": {"name": call["name"], "arguments": json.dumps(call.get("arguments", {}))}}]
