"""`hicl estimate` on a LLaVA-1.5-7B-shaped config (config.json only, built on the meta device)."""

from __future__ import annotations

import json

import pytest

#: 32 layers x rank 8 x (q, k, v, o: 4096 + 4096; gate, up, down: 4096 + 11008)
LORA_R8 = 32 * 8 * ((4096 + 4096) * 4 + (4096 + 11008) * 3)


@pytest.fixture(scope="module")
def llava7b(tmp_path_factory):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

    text = LlamaConfig(hidden_size=4096, intermediate_size=11008, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, vocab_size=32064, max_position_embeddings=4096)
    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14, projection_dim=768)
    config = LlavaConfig(text_config=text, vision_config=vision, projector_hidden_act="gelu",
                         vision_feature_layer=-2, image_token_index=32000)
    folder = tmp_path_factory.mktemp("llava-1.5-7b")
    config.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def config(llava7b):
    from hicl_app.engine.modeling.estimate import load_config

    return load_config(str(llava7b))


def test_cli_counts_a_7b_llava(cli, llava7b):
    result = cli("estimate", "--base", llava7b, "--method", "seq-lora", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert abs(out["parameters"] - 7.06e9) / 7.06e9 < 0.05
    assert sum(out["parts"].values()) == out["parameters"]
    assert out["trainable"] == LORA_R8 == 19_988_480
    assert out["state"]["parameters"] == LORA_R8
    assert out["memory"]["image_tokens"] == 576
    assert out["memory"]["gradient_checkpointing"] is True  # auto: above a billion parameters
    assert out["memory"]["peak"] == out["memory"]["peak_checkpointing"]


def test_memory_terms(config):
    from hicl_app.engine.modeling.estimate import estimate

    kw = dict(nproc=8, batch_size=16, max_length=2048)
    ddp = estimate(config, "seq-lora", **kw)["memory"]
    off = estimate(config, "seq-lora", gradient_checkpointing=False, **kw)["memory"]
    assert ddp["weights"] == 2 * 7_063_427_072 == off["weights"]
    assert ddp["trainable_state"] == 16 * LORA_R8
    assert ddp["per_rank_batch"] == 2 and ddp["sequence"] == 2048 + 576
    assert ddp["logits"] == 2 * 2624 * 32064 * 4
    assert ddp["activations"]["checkpointing"] < ddp["activations"]["no_checkpointing"]
    assert off["peak"] == off["peak_no_checkpointing"] > ddp["peak"] == ddp["peak_checkpointing"]
    assert estimate(config, "seq-lora", nproc=2, batch_size=7)["memory"]["per_rank_batch"] == 4  # the larger share


def test_method_states(config):
    from hicl_app.engine.modeling.estimate import estimate

    hide = [estimate(config, "hide", tasks=t)["state"] for t in (1, 4)]
    assert hide[1]["parameters"] > hide[0]["parameters"]
    assert hide[1]["parts"]["experts"] == 4 * LORA_R8 and hide[1]["expanded_layers"] == [31]
    assert hide[1]["answering_extra"] == 4 * LORA_R8 // 32
    auto = estimate(config, "hide", tasks=4, method_options={"expand": "auto", "expert_rank": 2})["state"]
    assert auto["parts"]["experts"] == LORA_R8 and auto["answering_extra"] == LORA_R8
    sac = estimate(config, "llava-c", tasks=10)["state"]  # bounded at twice the LoRA rank
    plain = estimate(config, "llava-c", tasks=10, method_options={"sac": False})["state"]
    assert sac["parameters"] == 2 * LORA_R8 and plain["parameters"] == 10 * LORA_R8
    assert estimate(config, "joint", tasks=10)["state"]["parameters"] == LORA_R8


def test_builtin_base_and_table(cli):
    result = cli("estimate", "--base", "tiny", "--method", "hide", "--tasks", "3")
    assert result.exit_code == 0, result.output
    assert "trainable (LoRA r=8)" in result.stdout and "peak" in result.stdout


@pytest.mark.parametrize("args, message", [
    (["--base", "{missing}", "--method", "seq-lora"], "no folder"),
    (["--base", "{empty}", "--method", "seq-lora"], "has no config.json"),
    (["--base", "{model}", "--method", "no-such"], "unknown method"),
    (["--base", "{model}", "--method", "seq-lora", "--nproc", "0"], "nproc must be >= 1"),
    (["--base", "{model}", "--method", "seq-lora", "--tasks", "0"], "tasks must be >= 1"),
])
def test_bad_input_is_one_clear_line(cli, llava7b, tmp_path, args, message):
    (tmp_path / "empty").mkdir()
    paths = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "model": llava7b}
    result = cli("estimate", *[a.format(**paths) for a in args])
    assert result.exit_code == 3
    assert result.stdout == ""
    assert result.stderr.startswith("error: ") and message in result.stderr.splitlines()[0]
