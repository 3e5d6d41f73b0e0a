"""Generation, outside the network: the torch sampler (``sampling.py``), the one token loop
(``loop.py``), the compiled decode step (``compiled.py``) and the text-level ``Engine``
(``engine.py``). The settings are ``craft.sampling.SamplingConfig``."""

from craft.generate.engine import Engine
from craft.generate.loop import Step, generate, stream
from craft.generate.sampling import filter_logits, sample_next
from craft.sampling import SamplingConfig

__all__ = ["Engine", "SamplingConfig", "Step", "filter_logits", "generate", "sample_next", "stream"]
