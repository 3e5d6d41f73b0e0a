from craft.callbacks.checkpoint import CraftCheckpoint
from craft.callbacks.prediction import SampleWriter
from craft.callbacks.progress import CraftProgressBar, RunSummary
from craft.callbacks.samples import SampleGeneration
from craft.callbacks.stop import GracefulStop, StopRequested
from craft.callbacks.throughput import TokenThroughput

__all__ = [
    "CraftCheckpoint",
    "GracefulStop",
    "StopRequested",
    "CraftProgressBar",
    "RunSummary",
    "SampleGeneration",
    "SampleWriter",
    "TokenThroughput",
]
