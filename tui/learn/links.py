"""The question texts cite llama.cpp's source files by path ("src/llama-kv-cache.cpp"); in the Learn screen
each such path becomes a link to that file on GitHub, at the llama.cpp commit llmtui runs. A pure text
transformation of Markdown, no Textual here."""

from __future__ import annotations

import re

# The llama.cpp commit that llama-cpp-python 0.3.36 vendors: its sdist carries the git metadata, and the tag
# v0.3.36 (1652066e) pins the submodule vendor/llama.cpp at this commit (`git ls-tree HEAD vendor/llama.cpp`
# in the unpacked sdist); the llama-server that benchmarks/build_llama_server.sh builds from that source
# reports "commit 0c1e570" in `--version`. A test holds LLAMA_CPP_PYTHON to the installed binding, so a new
# llama-cpp-python asks for this commit to be looked up again.
LLAMA_CPP_PYTHON = "0.3.36"
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
LLAMA_CPP_BLOB = f"https://github.com/ggml-org/llama.cpp/blob/{LLAMA_CPP_COMMIT}/"

# A path under one of llama.cpp's source folders, with a source file's extension. Each name is letters, digits,
# "_" and "-", joined by single dots, so "..", "." and empty segments never match; the path must not continue
# a longer one ("vendor/llama.cpp/src/…") nor go on past the extension ("src/x.cpp.bak", "src/x.cpp/y").
_NAME = r"[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)*"
SOURCE_PATH = re.compile(
    rf"(?<![A-Za-z0-9_./-])(?:src|common|include|ggml/src|ggml/include|tools|examples)/(?:{_NAME}/)*"
    rf"{_NAME}\.(?:c|cpp|h|hpp|cu|py)(?!\.?[A-Za-z0-9_/-])")

# What must stay as written: fenced code blocks, code spans (a run of n backticks up to the next run of
# exactly n, within a paragraph), inline and reference links and images, link reference definitions and
# autolinks. Paths are only linked in the text between these.
_PROTECTED = re.compile(
    r"^ {0,3}(?P<fence>`{3,}|~{3,}).*?(?:^ {0,3}(?P=fence)[`~]*[ \t]*$|\Z)"
    r"|(?<!`)(?P<ticks>`+)(?!`)(?:(?!\n[ \t]*\n).)*?(?<!`)(?P=ticks)(?!`)"
    r"|!?\[(?:[^\[\]\n]|\[[^\[\]\n]*\])*\](?:\([^)\n]*\)|\[[^\]\n]*\])"
    r"|^ {0,3}\[[^\]\n]+\]:[ \t]*\S+.*$"
    r"|<[A-Za-z][A-Za-z0-9+.-]*:[^<>\s]*>",
    re.MULTILINE | re.DOTALL)


def source_url(path: str) -> str:
    """The GitHub page of one llama.cpp source file, at the pinned commit."""
    return LLAMA_CPP_BLOB + path


def _link_plain(text: str) -> str:
    return SOURCE_PATH.sub(lambda m: f"[{m[0]}]({source_url(m[0])})", text)


def link_sources(markdown: str) -> str:
    """``markdown`` with every llama.cpp source path in its running text made a link to that file; the visible
    text stays the path. Code, existing links and anything that is not such a path are left as they are, so
    applying it twice changes nothing more."""
    out: list[str] = []
    last = 0
    for protected in _PROTECTED.finditer(markdown):
        out += [_link_plain(markdown[last:protected.start()]), protected[0]]
        last = protected.end()
    out.append(_link_plain(markdown[last:]))
    return "".join(out)
