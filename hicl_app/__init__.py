"""hicl: continual instruction tuning of multimodal LLMs, managed end to end."""

__version__ = "0.1.0"
