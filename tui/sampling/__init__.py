"""The pure-Python (numpy) sampler chain. Never imports textual or llama_cpp."""

from .base import Sampler
from .candidates import Candidates
from .chain import Chain
from .samplers import (
    SAMPLERS,
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
from .schema import BuildContext, Native, Param
from .trace import SampleTrace, StageTrace

__all__ = [
    "SAMPLERS", "XTC", "AdaptiveP", "BuildContext", "Candidates", "Chain", "Dist", "Dry", "DryVocab", "Greedy",
    "LogitBias", "MinP", "Mirostat", "MirostatV2", "Native", "Param", "Penalties", "SampleTrace", "Sampler",
    "StageTrace", "Temp", "TempExt", "TopK", "TopNSigma", "TopP", "Typical",
]
