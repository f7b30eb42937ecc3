"""Loading a model's processor, also where its video half cannot be built.

hicl tunes and scores on images only. Several families (Qwen2-VL, Qwen2.5-VL, LLaVA-OneVision,
SmolVLM) ship a processor with a video processor next to the image one, and transformers' video
processors need torchvision, which nothing else here needs (the PIL image processors do the
image work). When `AutoProcessor` fails for that reason alone, the processor is put together
from the same folder by its own class, with the tokenizer and image processor loaded as
`AutoProcessor` loads them and `ImageOnlyVideoProcessor` in the video slot: it keeps the saved
video settings (so a processor saved again is the same as the one loaded) and refuses videos.
transformers offers no image-only mode for these processors, hence this module.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import EngineError


def _video_processor_base():
    """transformers' VideoProcessorMixin, made findable by name as it is with torchvision installed.

    A processor checks each part's class by looking its base class's name up on the
    `transformers` module, which exports VideoProcessorMixin only when torchvision is there:
    the class itself imports without it.
    """
    import transformers
    from transformers.video_processing_utils import VideoProcessorMixin

    if not hasattr(transformers, "VideoProcessorMixin"):
        transformers.VideoProcessorMixin = VideoProcessorMixin
    return VideoProcessorMixin


def image_only_video_processor(settings: dict[str, Any] | None = None):
    """A stand-in for a family's video processor: its saved settings, no video support."""

    class ImageOnlyVideoProcessor(_video_processor_base()):
        """Keeps the video settings of the checkpoint; any video input is an error."""

        def __init__(self, settings: dict[str, Any] | None = None):
            self._settings = dict(settings or {})
            for key, value in self._settings.items():
                if key != "video_processor_type" and not hasattr(type(self), key):
                    setattr(self, key, value)

        def to_dict(self) -> dict[str, Any]:
            return dict(self._settings)

        def __call__(self, *args, **kwargs):
            raise EngineError("this processor was loaded without its video processor (torchvision is not installed)",
                              hint="hicl tasks are images; install torchvision to process videos")

        preprocess = __call__

    return ImageOnlyVideoProcessor(settings)


def _torchvision_missing() -> bool:
    from transformers.utils import is_torchvision_available

    return not is_torchvision_available()


def _processor_class(base: str):
    """The processor class a folder or hub id names (processor_class, else the model type's)."""
    from transformers import AutoConfig
    from transformers.models.auto.processing_auto import PROCESSOR_MAPPING_NAMES
    from transformers.processing_utils import ProcessorMixin

    name = None
    for file in ("processor_config.json", "preprocessor_config.json"):
        try:
            from transformers.utils import cached_file

            path = cached_file(base, file, _raise_exceptions_for_missing_entries=False)
        except Exception:
            path = None
        if path:
            name = json.loads(Path(path).read_text(encoding="utf-8")).get("processor_class")
            if name:
                break
    if name is None:
        name = PROCESSOR_MAPPING_NAMES.get(AutoConfig.from_pretrained(base).model_type)
    return ProcessorMixin.get_possibly_dynamic_module(name) if name else None


def _video_settings(base: str, processor_dict: dict) -> dict[str, Any]:
    if isinstance(processor_dict.get("video_processor"), dict):
        return processor_dict["video_processor"]
    from transformers.utils import cached_file

    for file in ("video_preprocessor_config.json",):
        path = cached_file(base, file, _raise_exceptions_for_missing_entries=False)
        if path:
            return json.loads(Path(path).read_text(encoding="utf-8"))
    return {}


def _without_video(base: str):
    """The processor of `base` with `ImageOnlyVideoProcessor` in its video slot, or None."""
    from transformers import AutoImageProcessor, AutoTokenizer

    cls = _processor_class(base)
    if cls is None or "video_processor" not in cls.get_attributes():
        return None
    processor_dict, kwargs = cls.get_processor_dict(base)
    args = []
    for name in cls.get_attributes():
        if name == "tokenizer":
            args.append(AutoTokenizer.from_pretrained(base))
        elif name == "image_processor":
            args.append(AutoImageProcessor.from_pretrained(base))
        elif name == "video_processor":
            args.append(image_only_video_processor(_video_settings(base, processor_dict)))
        else:
            return None
    return cls.from_args_and_dict(args, processor_dict, **kwargs)


def load_processor(base: str | os.PathLike) -> Any:
    """`AutoProcessor.from_pretrained(base)`, or its image-only equivalent without torchvision."""
    from transformers import AutoProcessor

    base = str(base)
    try:
        return AutoProcessor.from_pretrained(base)
    except Exception as exc:
        if not (_torchvision_missing() and "torchvision" in str(exc).lower()):
            raise
        processor = _without_video(base)
        if processor is None:
            raise
        return processor
