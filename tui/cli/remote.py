"""``--remote URL``: the dashboard and ``llmtui generate`` on a running inference server.

The options are shared by ``llmtui`` and ``llmtui generate``; a server that
cannot be reached, refuses the key or is not an inference server is one line
and exit status 2 (the dashboard shows the same line and keeps running).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from .. import validate as V
from .common import CliError


def remote_args(parser: argparse.ArgumentParser, sub: bool = False) -> None:
    g = parser.add_argument_group("remote servers")
    if sub:
        g.argument_default = argparse.SUPPRESS
    g.add_argument("--remote", action="append", metavar="URL", type=V.utf8_text,
                   help="watch a running server instead of a local model: llama.cpp's llama-server, vLLM, Ollama, "
                   "SGLang or any OpenAI-compatible API (http://host:port). Repeat it for several: the dashboard "
                   "then opens the fleet view (F)")
    g.add_argument("--backend", choices=["auto", "llama-server", "vllm", "ollama", "sglang", "openai"],
                   help="the server's protocol (default auto: detected from what it answers)")
    g.add_argument("--probe", action="store_true",
                   help="probe mode: step the server one token at a time (max_tokens 1 with its top-K) and sample "
                   "with llmtui's own chain here, so presets, step mode and re-sampling apply; default: stream "
                   "what the server samples (step mode always probes)")
    g.add_argument("--remote-timeout", type=V.number_in(0.5, 600.0), metavar="S",
                   help="seconds without an answer before a server counts as not answering (default 30)")
    if not any("--api-key" in a.option_strings for a in parser._actions):
        g.add_argument("--api-key", type=V.utf8_text, metavar="KEY", default=os.environ.get("LLMTUI_API_KEY"),
                       help="the server's API key, sent as 'Authorization: Bearer KEY' (default $LLMTUI_API_KEY)")


def remote_specs(args: argparse.Namespace) -> list[Any]:
    """The servers named on the command line, in order (a URL that cannot be one is a CliError)."""
    from ..remote import RemoteError
    from ..remote.entries import RemoteSpec

    specs = []
    for url in getattr(args, "remote", None) or []:
        try:
            from ..remote import normalise_url

            specs.append(RemoteSpec(normalise_url(url), getattr(args, "api_key", None),
                                    getattr(args, "backend", None) or "auto"))
        except RemoteError as exc:
            raise CliError(f"--remote: {exc}") from None
    return specs


def remotes_from(args: argparse.Namespace) -> Any:
    from ..remote.entries import Remotes

    return Remotes(remote_specs(args), probe=bool(getattr(args, "probe", False)),
                   timeout=getattr(args, "remote_timeout", None))
