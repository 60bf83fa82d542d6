"""resetfp4: accurate, fast small-batch NVFP4 inference of reasoning LLMs."""

__version__ = "0.1.0"
