"""The learning path: the llama.cpp study roadmap's questions, each with an explanation and an
experiment. The explanations are Markdown files in ``questions/`` (one per question, with a small
front matter), so they are easy to review and translate. No Textual here."""

from __future__ import annotations

import dataclasses
import functools
import importlib.resources
from dataclasses import dataclass

STAGES = {
    1: ("First look at the inference flow", "初探 LLM 推理流程"),
    2: ("KV cache and context management", "深入 KV cache 與 context 管理"),
    3: ("Sampling and decoding strategies", "掌握 sampling 與 decoding 策略"),
    4: ("Quantization and performance", "探索量化與效能調校"),
    5: ("A local chat app", "動手做本地 Agent/Chat App 原型"),
}


@dataclass(frozen=True, slots=True)
class Question:
    id: str
    stage: int
    title: str
    title_zh: str
    experiment: str
    body: str  # Markdown
    number: str = ""  # "stage.n", in reading order

    @property
    def label(self) -> str:
        return f"{self.number} {self.title}"

    @property
    def explanation(self) -> str:
        return self.body.split("## What to look at")[0].strip()

    @property
    def look_at(self) -> str:
        return self._section("What to look at")

    def _section(self, title: str) -> str:
        part = self.body.split(f"## {title}\n", 1)
        return part[1].split("\n## ", 1)[0].strip() if len(part) == 2 else ""

    @property
    def try_next(self) -> list[str]:
        """The variations, each run by its number key ("1: …", "2: …")."""
        return [line[2:].strip() for line in self._section("Try next").splitlines() if line.startswith("- ")]

    @property
    def command_line(self) -> list[str]:
        return [line[2:].strip() for line in self._section("On the command line").splitlines()
                if line.startswith("- ")]


class LearnFileError(Exception):
    pass


def _parse(name: str, text: str) -> Question:
    if not text.startswith("---\n"):
        raise LearnFileError(f"{name}: missing front matter")
    head, _, body = text[4:].partition("\n---\n")
    meta = {}
    for line in head.splitlines():
        key, _, value = line.partition(":")
        meta[key.strip()] = value.strip()
    missing = {"id", "stage", "title", "title_zh", "experiment"} - set(meta)
    if missing:
        raise LearnFileError(f"{name}: missing {', '.join(sorted(missing))}")
    return Question(meta["id"], int(meta["stage"]), meta["title"], meta["title_zh"], meta["experiment"],
                    body.strip())


@functools.cache
def load_questions() -> tuple[Question, ...]:
    """The questions shipped in the package, in reading order (read once)."""
    folder = importlib.resources.files("tui.learn").joinpath("questions")
    items = sorted((p for p in folder.iterdir() if p.name.endswith(".md")), key=lambda p: p.name)
    questions = [_parse(p.name, p.read_text(encoding="utf-8")) for p in items]
    counts: dict[int, int] = {}
    numbered = []
    for q in questions:
        counts[q.stage] = counts.get(q.stage, 0) + 1
        numbered.append(dataclasses.replace(q, number=f"{q.stage}.{counts[q.stage]}"))
    return tuple(numbered)


def find(question_id: str) -> Question:
    """A question by id (``s2-kv-cache``), by number (``2.1``) or by a unique id prefix."""
    questions = load_questions()
    for q in questions:
        if question_id in (q.id, q.number):
            return q
    hits = [q for q in questions if q.id.startswith(question_id)]
    if len(hits) == 1:
        return hits[0]
    ids = ", ".join(q.id for q in questions)
    raise KeyError(f"no question {question_id!r} (known: {ids})")
