"""The inference engine. Never imports textual.

Import ``tui.engine.llama`` (the only module that imports ``llama_cpp``) only
where a real model is needed; everything else here is pure Python.
"""

from .errors import ContextError, EngineError, ModelFileError
from .loop import Generation, GenerationStats, Step, StopReason
from .settings import EngineSettings

__all__ = [
    "ContextError",
    "EngineError",
    "EngineSettings",
    "Generation",
    "GenerationStats",
    "ModelFileError",
    "Step",
    "StopReason",
]
