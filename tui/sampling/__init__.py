"""The pure-Python (numpy) sampler chain. Never imports textual or llama_cpp."""

from .base import Sampler
from .candidates import Candidates
from .chain import Chain
from .samplers import (
    XTC,
    AdaptiveP,
    Dist,
    Dry,
    DryVocab,
    Greedy,
    LogitBias,
    MinP,
    Mirostat,
    MirostatV2,
    Penalties,
    Temp,
    TempExt,
    TopK,
    TopNSigma,
    TopP,
    Typical,
)
from .trace import SampleTrace, StageTrace

__all__ = [
    "XTC", "AdaptiveP", "Candidates", "Chain", "Dist", "Dry", "DryVocab", "Greedy", "LogitBias", "MinP",
    "Mirostat", "MirostatV2", "Penalties", "SampleTrace", "Sampler", "StageTrace", "Temp", "TempExt", "TopK",
    "TopNSigma", "TopP", "Typical",
]
