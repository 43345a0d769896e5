"""The pure-Python (numpy) sampler chain. Never imports textual or llama_cpp."""

from .base import Sampler
from .candidates import Candidates
from .chain import Chain
from .samplers import Greedy
from .trace import SampleTrace, StageTrace

__all__ = ["Candidates", "Chain", "Greedy", "SampleTrace", "Sampler", "StageTrace"]
