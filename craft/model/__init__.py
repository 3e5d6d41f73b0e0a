from craft.model.config import GPTConfig
from craft.model.gpt import GPT

__all__ = ["GPT", "GPTConfig"]
