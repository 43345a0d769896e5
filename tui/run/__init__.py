"""The run model: what the panels show, folded from the events of any source of steps. No Textual."""

from .model import KvView, Phase, RunModel, RunResult, Update

__all__ = ["KvView", "Phase", "RunModel", "RunResult", "Update"]
