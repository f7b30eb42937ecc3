"""hicl push, end to end: the real huggingface_hub client against a Hub look-alike on 127.0.0.1.

A two-stage run is recorded in the catalog with real PEFT adapters of a tiny LLaVA; pushing it
must give a repo that `PeftModel.from_pretrained` loads to the same logits, and every failure a
user will meet must end with a clear message, a non-zero exit and nothing published.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
from pathlib import Path

import pytest
from hub_server import FakeHub

TOKEN = "hf_alice_SECRET_token_0123456789"
BOB_TOKEN = "hf_bob_token"
READ_TOKEN = "hf_alice_readonly_token"
TASKS = ("colour", "shape")


# --- fixtures ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny LlavaForConditionalGeneration saved with save_pretrained (no tokenizer needed here)."""
    import torch
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    torch.manual_seed(0)
    cfg = LlavaConfig(
        vision_config=CLIPVisionConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                       num_attention_heads=2, intermediate_size=64, projection_dim=32),
        text_config=LlamaConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64,
                                pad_token_id=0, bos_token_id=1, eos_token_id=2),
        image_token_index=63)
    folder = tmp_path_factory.mktemp("tiny-llava")
    LlavaForConditionalGeneration(cfg).save_pretrained(folder)
    return folder


def load_base(folder: Path):
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(folder).eval()


def logits(model) -> "torch.Tensor":  # noqa: F821
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor([[1, 5, 9, 17, 33, 4]])).logits


def save_stage(base_dir: Path, stage_dir: Path, seed: int) -> dict[str, str]:
    """A LoRA with non-zero factors in PEFT layout under stage_dir/adapter, plus method state."""
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file

    from hicl_app.core.fsio import sha256_file

    torch.manual_seed(seed)
    model = get_peft_model(load_base(base_dir), LoraConfig(
        r=4, lora_alpha=8, init_lora_weights=False,
        target_modules=r".*language_model.*\.(q_proj|v_proj)"))
    model.save_pretrained(stage_dir / "adapter")
    (stage_dir / "state").mkdir(parents=True)
    save_file({"anchors": torch.randn(2, 8)}, str(stage_dir / "state" / "anchors.safetensors"))
    (stage_dir / "state" / "state.json").write_text(json.dumps({"stage": seed}))
    return {p.relative_to(stage_dir).as_posix(): sha256_file(p) for p in sorted(stage_dir.rglob("*")) if p.is_file()}


@pytest.fixture
def run_id(home, tiny_base) -> int:
    """A completed two-stage seq-lora run with adapters, method state and a full accuracy matrix."""
    from hicl_app.catalog.db import Catalog
    from hicl_app.catalog.models import Adapter, Run, Task
    from hicl_app.catalog.runs import create_run, stages_of, upsert_score
    from hicl_app.core.settings import Settings

    catalog = Catalog(Settings.resolve())
    with catalog.session() as s:
        for i, name in enumerate(TASKS):
            s.add(Task(name=name, source_path=f"/data/{name}.jsonl", source_sha256=f"{i}" * 64,
                       source_format="llava", images_dir="/data/img", n_train=10, n_test=5, scorer="exact",
                       data_dir=str(home / "tasks" / name)))
        run = create_run(s, name="seq", method="seq-lora", base_model=str(tiny_base), task_order=list(TASKS),
                         stages=[[t] for t in TASKS], config={"train": {"rank": 4}})
        for st in stages_of(s, run.id):
            stage_dir = catalog.settings.adapters / f"run-{run.id}" / f"stage-{st.index}"
            files = save_stage(tiny_base, stage_dir, seed=st.index + 1)
            s.add(Adapter(run_id=run.id, stage_id=st.id, path=str(stage_dir / "adapter"),
                          sha256=files["adapter/adapter_model.safetensors"], size_bytes=1, files=files))
            st.status = "done"
            s.add(st)
        for stage, row in enumerate([[80.0, None], [55.0, 90.0]]):
            for task, score in zip(TASKS, row):
                if score is not None:
                    upsert_score(s, run.id, stage, task, score=score, n=5, scorer="exact")
        s.get(Run, run.id).status = "completed"
        return run.id


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """The Hub look-alike, with huggingface_hub pointed at it: online, no Xet, token in HF_TOKEN."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)
    monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login" / "token"))  # ignore a real login
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    with FakeHub({TOKEN: ("alice", "write"), BOB_TOKEN: ("bob", "write"), READ_TOKEN: ("alice", "read")}) as server:
        monkeypatch.setenv("HF_ENDPOINT", server.endpoint)
        yield server


def stage_dir(home: Path, run_id: int, k: int) -> Path:
    return home / "adapters" / f"run-{run_id}" / f"stage-{k}"


def push(cli, *args):
    return cli("push", *args)


def fails(result, code: int, *phrases: str) -> str:
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    assert TOKEN not in result.stdout + result.stderr
    return result.stderr


def only_initial_commit(hub: FakeHub, repo_id: str) -> bool:
    head = hub.head(repo_id)
    return head is not None and head.parent is None and set(head.files) == {".gitattributes"}


# --- the happy path -------------------------------------------------------------------------------
def test_push_uploads_everything_and_the_adapter_loads_with_the_same_logits(cli, home, run_id, tiny_base, hub,
                                                                             tmp_path):
    from huggingface_hub import ModelCard, snapshot_download
    from peft import PeftModel

    dry = push(cli, run_id, "--hub", "alice/tiny-seq", "--dry-run", "--json")
    assert dry.exit_code == 0, dry.stderr
    plan = json.loads(dry.stdout)
    assert hub.requests == []  # a dry run sends nothing

    result = push(cli, run_id, "--hub", "alice/tiny-seq", "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    head = hub.head("alice/tiny-seq")
    assert out["commit_oid"] == head.oid and out["commit_url"].endswith(f"/alice/tiny-seq/commit/{head.oid}")
    assert out["tag"] == "stage-2" and hub.repos["alice/tiny-seq"].tags == {"stage-2": head.oid}  # stages count from 1
    assert head.parent is not None and hub.head("alice/tiny-seq", head.parent).parent is None  # ONE commit

    # exactly what the dry run listed, byte for byte
    assert set(head.files) - {".gitattributes"} == {f["path"] for f in plan["files"]}
    for f in plan["files"]:
        data = hub.file("alice/tiny-seq", f["path"])
        assert len(data) == f["size"]
        if f["source"]:
            assert data == Path(f["source"]).read_bytes()
    last = stage_dir(home, run_id, 1)
    assert hub.file("alice/tiny-seq", "adapter_model.safetensors") == (last / "adapter/adapter_model.safetensors").read_bytes()
    assert hub.file("alice/tiny-seq", "stages/stage-1/state/anchors.safetensors") == \
        (stage_dir(home, run_id, 0) / "state/anchors.safetensors").read_bytes()
    assert head.files["adapter_model.safetensors"].lfs and not head.files["hicl.json"].lfs

    manifest = json.loads(hub.file("alice/tiny-seq", "hicl.json"))
    assert manifest["run"]["method"] == "seq-lora" and manifest["task_order"] == list(TASKS)
    assert manifest["stage"] == 1 and manifest["matrix"] == [[80.0, None], [55.0, 90.0]]
    assert [t["source_sha256"] for t in manifest["tasks"]] == ["0" * 64, "1" * 64]
    assert manifest["files"]["adapter_model.safetensors"]["sha256"] == manifest["stages"][1]["files"][
        "adapter/adapter_model.safetensors"]
    card = ModelCard(hub.file("alice/tiny-seq", "README.md").decode())
    assert card.data.library_name == "peft" and "continual-learning" in card.data.tags
    assert "| 2 | 55.00 | 90.00 |" in card.text and "1" * 64 in card.text and "Forgetting" in card.text

    # the published adapter is the same model
    snap = snapshot_download("alice/tiny-seq", revision="stage-2", endpoint=hub.endpoint, token=TOKEN,
                             cache_dir=tmp_path / "hf-cache")
    import torch

    want = logits(PeftModel.from_pretrained(load_base(tiny_base), last / "adapter").eval())
    got = logits(PeftModel.from_pretrained(load_base(tiny_base), snap).eval())
    assert torch.equal(want, got) and not torch.equal(got, logits(load_base(tiny_base)))
    first = logits(PeftModel.from_pretrained(load_base(tiny_base), Path(snap) / "stages/stage-1/adapter").eval())
    assert torch.equal(first, logits(PeftModel.from_pretrained(load_base(tiny_base),
                                                               stage_dir(home, run_id, 0) / "adapter").eval()))

    # recorded in the catalog and shown by run show
    shown = json.loads(cli("run", "show", run_id, "--json").stdout)
    assert [(p["stage_index"], p["repo_id"], p["commit_oid"], p["commit_url"], p["tag"]) for p in shown["pushes"]] == \
        [(1, "alice/tiny-seq", head.oid, out["commit_url"], "stage-2")]
    text = cli("run", "show", run_id).stdout
    assert out["commit_url"] in text and "stage-2" in text

    # the token went nowhere: not in the output, the catalog or the logs
    for path in home.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert TOKEN not in dry.stdout + dry.stderr + result.stdout + result.stderr


def test_stage_option_branch_tags_and_a_repeated_push(cli, home, run_id, hub):
    first = push(cli, run_id, "--hub", "alice/r", "--stage", "1", "--json")
    assert first.exit_code == 0, first.stderr
    head0 = hub.head("alice/r")
    assert hub.file("alice/r", "adapter_model.safetensors") == \
        (stage_dir(home, run_id, 0) / "adapter/adapter_model.safetensors").read_bytes()
    assert not any(p.startswith("stages/stage-2/") for p in head0.files)
    manifest = json.loads(hub.file("alice/r", "hicl.json"))
    assert manifest["matrix"] == [[80.0, None]] and manifest["metrics"]["mft"] == 80.0  # the card's numbers

    assert push(cli, run_id, "--hub", "alice/r").exit_code == 0
    head1 = hub.head("alice/r")
    assert hub.repos["alice/r"].tags == {"stage-1": head0.oid, "stage-2": head1.oid}

    again = push(cli, run_id, "--hub", "alice/r", "--json")  # nothing changed: no new commit, tag kept
    assert again.exit_code == 0, again.stderr
    assert json.loads(again.stdout)["commit_oid"] == head1.oid == hub.head("alice/r").oid

    dev = push(cli, run_id, "--hub", "alice/r", "--stage", "1", "--revision", "dev", "--json")
    assert dev.exit_code == 0, dev.stderr
    assert hub.head("alice/r").oid == head1.oid  # main untouched
    assert json.loads(dev.stdout)["tag"] == "dev-stage-1"
    assert hub.repos["alice/r"].tags["dev-stage-1"] == hub.repos["alice/r"].branches["dev"]

    text = push(cli, run_id, "--hub", "alice/r", "--dry-run")
    assert text.exit_code == 0 and "adapter_model.safetensors" in text.stdout and "files," in text.stdout


def test_private_repo_and_explicit_endpoint(cli, run_id, hub, monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT")
    result = push(cli, run_id, "--hub", "alice/secret", "--private", "--endpoint", hub.endpoint, "--json")
    assert result.exit_code == 0, result.stderr
    assert hub.repos["alice/secret"].private and json.loads(result.stdout)["private"] is True

    hub.create_repo("alice/open", "alice", private=False)
    err = fails(push(cli, run_id, "--hub", "alice/open", "--private", "--endpoint", hub.endpoint), 5, "is public")
    assert "nothing" in err or "hide" in err
    assert only_initial_commit(hub, "alice/open")


def test_card_names_a_hub_base_model(home, run_id):
    from huggingface_hub import ModelCard

    from hicl_app.catalog.db import Catalog
    from hicl_app.catalog.models import Run
    from hicl_app.core.settings import Settings
    from hicl_app.hub.bundle import build_bundle

    with Catalog(Settings.resolve()).session() as s:
        s.get(Run, run_id).base_model = "llava-hf/llava-1.5-7b-hf"
        s.flush()
        bundle = build_bundle(s, run_id, repo_id="alice/x")
    card = ModelCard(next(u.data for u in bundle.uploads if u.path_in_repo == "README.md").decode())
    assert card.data.base_model == "llava-hf/llava-1.5-7b-hf" and card.data.library_name == "peft"
    assert bundle.manifest["run"]["base_model"] == "llava-hf/llava-1.5-7b-hf"


# --- what goes wrong --------------------------------------------------------------------------------
def test_no_token(cli, run_id, hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    fails(push(cli, run_id, "--hub", "alice/r"), 1, "no Hugging Face token", "HF_TOKEN")
    assert hub.requests == []


def test_rejected_token(cli, run_id, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_known_token")
    err = fails(push(cli, run_id, "--hub", "alice/r"), 1, "401")
    assert "hf_not_a_known_token" not in err
    assert hub.repos == {}


def test_read_only_token(cli, run_id, hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", READ_TOKEN)
    fails(push(cli, run_id, "--hub", "alice/r"), 1, "read-only")
    assert hub.repos == {}


def test_repo_of_someone_else(cli, run_id, hub):
    hub.create_repo("bob/model", "bob", private=False)
    err = fails(push(cli, run_id, "--hub", "bob/model"), 1, "'alice' may not write to bob/model", "403")
    assert "alice/model" in err  # the hint names a repo the user can push to
    assert only_initial_commit(hub, "bob/model") and hub.repos["bob/model"].tags == {}
    fails(push(cli, run_id, "--hub", "bob/new-one"), 1, "may not write to bob/new-one")
    assert "bob/new-one" not in hub.repos


def test_network_down(cli, run_id, hub, monkeypatch):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    fails(push(cli, run_id, "--hub", "alice/r"), 1, "cannot reach", f"127.0.0.1:{port}", "nothing was pushed")


@pytest.mark.parametrize("how", ["drop", "500"])
def test_a_commit_that_breaks_off_publishes_nothing(cli, home, run_id, hub, how):
    from sqlmodel import select

    from hicl_app.catalog.db import Catalog
    from hicl_app.catalog.models import Push
    from hicl_app.core.settings import Settings

    hub.fail_commit = how
    fails(push(cli, run_id, "--hub", "alice/r"), 1, "nothing was pushed")
    assert only_initial_commit(hub, "alice/r") and hub.repos["alice/r"].tags == {}
    with Catalog(Settings.resolve()).session() as s:
        assert list(s.exec(select(Push))) == []
    assert push(cli, run_id, "--hub", "alice/r").exit_code == 0  # and a retry goes through


def test_offline_mode_is_named(cli, run_id, hub, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    fails(push(cli, run_id, "--hub", "alice/r"), 1, "HF_HUB_OFFLINE")
    assert hub.requests == []


def test_a_file_changed_since_training_is_refused(cli, home, run_id, hub):
    target = stage_dir(home, run_id, 0) / "state" / "anchors.safetensors"
    original = target.read_bytes()
    target.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    fails(push(cli, run_id, "--hub", "alice/r"), 5, "anchors.safetensors", "no longer matches the catalog")
    fails(push(cli, run_id, "--hub", "alice/r", "--dry-run"), 5, "no longer matches the catalog")
    target.write_bytes(original)
    (stage_dir(home, run_id, 1) / "adapter" / "adapter_config.json").unlink()
    fails(push(cli, run_id, "--hub", "alice/r", "--stage", "2"), 5, "adapter_config.json is missing")
    assert hub.requests == []


def test_bad_arguments(cli, run_id, hub):
    fails(push(cli, run_id, "--hub", "just-a-name"), 3, "NAMESPACE/NAME")
    fails(push(cli, run_id, "--hub", "alice/r", "--stage", "7"), 3, "no stage 7")
    fails(push(cli, "404", "--hub", "alice/r"), 4, "no run")
    assert hub.requests == []
    assert os.environ["HF_TOKEN"] == TOKEN


def test_the_card_says_what_loads_a_method_whose_model_is_not_its_peft_adapter(home, run_id):
    from sqlmodel import select

    from hicl_app.catalog.db import Catalog
    from hicl_app.catalog.models import Adapter
    from hicl_app.core.fsio import sha256_file
    from hicl_app.core.settings import Settings
    from hicl_app.hub.bundle import build_bundle

    with Catalog(Settings.resolve()).session() as s:
        plain = build_bundle(s, run_id, repo_id="alice/x")
        assert plain.manifest["answering_model"]["peft"]  # no export recorded: the adapter is the model
        adapter = s.exec(select(Adapter).where(Adapter.run_id == run_id).order_by(Adapter.id.desc())).first()
        manifest = Path(adapter.path).parent / "stage.json"
        manifest.write_text(json.dumps({"export": {"files": ["state/anchors.safetensors"], "peft": False,
                                                   "loader": "hicl: get_method('hide').load(base, stage_dir)"}}))
        adapter.files = {**adapter.files, "stage.json": sha256_file(manifest)}
        s.add(adapter)
        s.flush()
        bundle = build_bundle(s, run_id, repo_id="alice/x")
    card = next(u.data for u in bundle.uploads if u.path_in_repo == "README.md").decode()
    assert "**not** the PEFT adapter" in card and "get_method('hide').load" in card
    assert bundle.manifest["answering_model"]["files"] == ["stages/stage-2/state/anchors.safetensors"]
    assert "stages/stage-2/state/anchors.safetensors" in bundle.manifest["files"]


# --- credentials never shown ------------------------------------------------------------------------
def _shows_no_secret(result, *secrets: str) -> None:
    out = (result.stdout + result.stderr).lower()
    for secret in secrets:
        assert secret.lower() not in out, out


def test_scrub_masks_every_case_and_encoding_of_a_secret():
    from urllib.parse import quote

    from hicl_app.hub.redact import scrub

    text = f"bad {TOKEN.upper()} / {TOKEN.lower()} / {quote('p@ss/w0rd!', safe='')} / ok"
    assert scrub(text, [TOKEN, "p@ss/w0rd!"]) == "bad *** / *** / *** / ok"
    assert scrub("a user named bob", ["bob"]) == "a user named bob"  # too short to be told from words


def test_a_hub_that_echoes_the_token_as_the_account_name_never_shows_it(cli, run_id, hub):
    hub.tokens[TOKEN] = (TOKEN.upper(), "write")
    err = fails(push(cli, run_id, "--hub", "alice/r"), 1, "'***' may not write to alice/r")
    assert TOKEN.upper() not in err and "***/r" in err  # the hint's repo of your own, scrubbed too


def test_credentials_in_the_endpoint_are_never_echoed_or_stored(cli, home, run_id, hub, monkeypatch):
    monkeypatch.delenv("HF_ENDPOINT")
    endpoint = hub.endpoint.replace("http://", "http://carol:pa55word-xyz@")
    dry = push(cli, run_id, "--hub", "alice/c", "--endpoint", endpoint, "--dry-run", "--json")
    assert dry.exit_code == 0 and json.loads(dry.stdout)["endpoint"] == hub.endpoint
    _shows_no_secret(dry, "pa55word-xyz", "carol:")
    # the HTTP client sends the URL's user info as basic auth, which the look-alike refuses (401):
    # neither the refusal nor anything recorded may echo it
    result = push(cli, run_id, "--hub", "alice/c", "--endpoint", endpoint)
    assert result.exit_code == 1 and hub.endpoint in result.stderr
    _shows_no_secret(result, "pa55word-xyz", "carol:")
    with sqlite3.connect(home / "hicl.db") as conn:
        assert all("pa55word" not in r[0] for r in conn.execute("SELECT endpoint FROM pushes"))


def test_a_token_over_plain_http_to_another_machine_is_warned_about(cli, run_id, hub, monkeypatch):
    from hicl_app.hub import redact

    assert redact.plain_http_warning("https://hub.example.org") is None
    for local in ("http://127.0.0.1:8080", "http://localhost", "http://[::1]:9"):
        assert redact.plain_http_warning(local) is None
    assert "sent unencrypted to hub.example.org" in redact.plain_http_warning("http://u:pw@hub.example.org/")
    assert "pw@" not in redact.plain_http_warning("http://u:pw@hub.example.org/")

    assert "plain http" not in push(cli, run_id, "--hub", "alice/w").stderr  # the hub on 127.0.0.1
    monkeypatch.setattr(redact, "is_loopback", lambda host: False)  # as if the hub were another machine
    result = push(cli, run_id, "--hub", "alice/w")
    assert result.exit_code == 0, result.stderr
    first = result.stderr.splitlines()[0]
    assert first.startswith("warning: ") and "token is sent unencrypted" in first
