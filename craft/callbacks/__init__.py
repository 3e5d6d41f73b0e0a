from craft.callbacks.checkpoint import CraftCheckpoint
from craft.callbacks.prediction import SampleWriter

__all__ = ["CraftCheckpoint", "SampleWriter"]
