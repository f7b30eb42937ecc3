"""One LoRA adapter per stage, saved in PEFT layout: the common core of the two baselines."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import EngineError
from ..base import Method, StageContext

if TYPE_CHECKING:
    from torch import nn

ADAPTER = "adapter"


class SingleLora(Method):
    """Trains one LoRA; `continues` says whether a stage picks up the previous stage's adapter."""

    continues: bool = False

    def prepare(self, base: nn.Module, ctx: StageContext) -> nn.Module:
        from ...modeling.adapters import load_lora, new_lora

        spec = ctx.spec
        if not (self.continues and spec.stage_index > 0):
            return new_lora(base, spec.train)
        if spec.prev_stage_dir is None:
            raise EngineError(f"{self.name} stage {spec.stage_index + 1} needs the previous stage's folder",
                              hint="run the stages in order")
        return load_lora(base, spec.prev_stage_dir / ADAPTER, trainable=True)

    def save(self, model: nn.Module, ctx: StageContext) -> dict[str, str]:
        from ...modeling.adapters import save_adapter

        hashes = save_adapter(model, ctx.stage_dir / ADAPTER)
        return {f"{ADAPTER}/{name}": digest for name, digest in hashes.items()}

    def load(self, base: nn.Module, stage_dir: Path) -> nn.Module:
        from ...modeling.adapters import load_lora

        return load_lora(base, Path(stage_dir) / ADAPTER)


class BuiltAdapterLora(SingleLora):
    """A method whose answering adapter is built at save time from several LoRAs (o-lora's sum,
    merge's merge): evaluation loads the saved adapter on the plain base, so the scored model is
    the very one `load` and the export give."""

    def eval_model(self, model: nn.Module, ctx: StageContext) -> nn.Module:
        return self.load(model.unload(), ctx.stage_dir)
