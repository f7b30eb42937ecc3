"""Synthetic UCIT-like continual-instruction-tuning benchmark (Pillow only, no torch)."""

from .tasks import GENERAL_PROMPTS, TASK_NAMES, pretrain_corpus, vocabulary_corpus
from .writer import generate, read_manifest

__all__ = ["GENERAL_PROMPTS", "TASK_NAMES", "generate", "pretrain_corpus", "read_manifest",
           "vocabulary_corpus"]
