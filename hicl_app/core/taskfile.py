"""Reading and validating task files (LLaVA conversations or plain VQA) before anything is written.

Every record is checked; up to MAX_PROBLEMS problems are collected into one report naming file
and line (JSONL) or record index (JSON list), so a user fixes a file in one pass. Pure Python +
Pillow: the CLI imports this without torch.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidInput

MAX_PROBLEMS = 20
IMAGE_TOKEN = "<image>"
HUMAN_ROLES = {"human", "user"}
ASSISTANT_ROLES = {"gpt", "assistant"}
#: images above this many pixels are refused at add-task (PIL's own bomb limit is ~89 M)
MAX_PIXELS = 40_000_000
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


@dataclass
class ParsedFile:
    path: Path
    sha256: str
    source_format: str  # llava | vqa (the first record's; mixing is allowed)
    records: list[dict] = field(default_factory=list)


class _Problems:
    def __init__(self) -> None:
        self.items: list[str] = []
        self.count = 0

    def add(self, where: str, reason: str) -> None:
        self.count += 1
        if len(self.items) < MAX_PROBLEMS:
            self.items.append(f"{where}: {reason}")

    def report(self) -> list[str]:
        extra = self.count - len(self.items)
        return self.items + ([f"... and {extra} more problem(s) not shown"] if extra > 0 else [])


def _decode(path: Path, data: bytes, problems: _Problems) -> str | None:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problems.add(f"{path}:{line}", f"not UTF-8 (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                     "re-save the file as UTF-8")
        return None


def _load_objects(path: Path, text: str, problems: _Problems) -> list[tuple[str, object]]:
    """(location, parsed object) for a JSON list or JSON Lines file."""
    stripped = text.lstrip()
    if not stripped:
        problems.add(str(path), "the file is empty; it needs at least one record")
        return []
    if stripped.startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            problems.add(f"{path}:{exc.lineno}", f"bad JSON: {exc.msg} (column {exc.colno})")
            return []
        if not isinstance(data, list):
            problems.add(str(path), "expected a JSON list of records")
            return []
        return [(f"{path} record {i}", obj) for i, obj in enumerate(data)]
    out = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            out.append((f"{path}:{lineno}", json.loads(line)))
        except json.JSONDecodeError as exc:
            problems.add(f"{path}:{lineno}", f"bad JSON: {exc.msg} (column {exc.colno})")
    if not out and not problems.count:
        problems.add(str(path), "the file has no records")
    return out


def _strip_image_token(text: str) -> str:
    return text.replace(IMAGE_TOKEN, "").strip()


def _parse_llava(obj: dict, where: str, problems: _Problems) -> tuple[str, str, list] | None:
    conv = obj.get("conversations")
    if not isinstance(conv, list) or not conv:
        problems.add(where, "'conversations' must be a non-empty list of {\"from\", \"value\"} turns")
        return None
    turns: list[list[str]] = []
    pending: str | None = None
    for k, turn in enumerate(conv):
        if not isinstance(turn, dict) or not isinstance(turn.get("value"), str) or not isinstance(turn.get("from"), str):
            problems.add(where, f"turn {k} must be an object with string 'from' and 'value'")
            return None
        role = turn["from"].lower()
        if role == "system":
            continue
        if role in HUMAN_ROLES:
            if pending is not None:
                problems.add(where, f"turn {k}: two human turns in a row (turn {k - 1} has no answer)")
                return None
            pending = _strip_image_token(turn["value"])
            if not pending:
                problems.add(where, f"turn {k}: the human turn has no question text")
                return None
        elif role in ASSISTANT_ROLES:
            if pending is None:
                problems.add(where, f"turn {k}: an answer without a question before it")
                return None
            if not turn["value"].strip():
                problems.add(where, f"turn {k}: the answer is empty")
                return None
            if IMAGE_TOKEN in turn["value"]:
                problems.add(where, f"turn {k}: the answer contains {IMAGE_TOKEN}, which only a question may hold")
                return None
            turns.append([pending, turn["value"].strip()])
            pending = None
        else:
            problems.add(where, f"turn {k}: unknown role {turn['from']!r} (use 'human' or 'gpt')")
            return None
    if pending is not None:
        problems.add(where, "the conversation ends without an answer (the last turn must be 'gpt')")
        return None
    if not turns:
        problems.add(where, "the conversation has no question/answer pair")
        return None
    (question, answer), history = turns[-1], turns[:-1]
    return question, answer, history


def _parse_vqa(obj: dict, where: str, problems: _Problems) -> tuple[str, str | list[str], list] | None:
    """A VQA record: `question` (or `text`, as LLaVA's question files name it) and `answer`, one
    string, or (test files) a list of reference answers, e.g. the captions of an image."""
    q, a = obj.get("question", obj.get("text")), obj.get("answer")
    if isinstance(a, (int, float)) and not isinstance(a, bool):
        a = str(a)
    ok = True
    if not isinstance(q, str) or not _strip_image_token(q):
        problems.add(where, "'question' must be a non-empty string")
        ok = False
    if isinstance(a, list):
        if not a or not all(isinstance(x, str) and x.strip() and IMAGE_TOKEN not in x for x in a):
            problems.add(where, "a list 'answer' must hold non-empty strings (the reference answers)")
            ok = False
        else:
            a = [x.strip() for x in a]
    elif not isinstance(a, str) or not a.strip():
        problems.add(where, "'answer' must be a non-empty string")
        ok = False
    elif IMAGE_TOKEN in a:
        problems.add(where, f"'answer' contains {IMAGE_TOKEN}, which only a question may hold")
        ok = False
    else:
        a = a.strip()
    return (_strip_image_token(q), a, []) if ok else None


class _ImageChecker:
    """Resolves image paths inside the image folder and checks each file opens (once per path)."""

    def __init__(self, images_dir: Path):
        self.root = images_dir.resolve()
        self.seen: dict[Path, str | None] = {}

    def check(self, raw: str) -> tuple[Path | None, str | None]:
        if "\x00" in raw:  # no file system takes one; os calls would raise ValueError
            return None, f"image path {raw!r} contains a NUL byte; fix the path"
        candidate = Path(raw)
        full = (candidate if candidate.is_absolute() else self.root / candidate).resolve()
        if not full.is_relative_to(self.root):
            return None, f"image path {raw!r} points outside the image folder {self.root}; " \
                         "keep images under --images"
        if full not in self.seen:
            self.seen[full] = self._open(full)
        err = self.seen[full]
        return (None, f"image {raw!r}: {err}") if err else (full, None)

    @staticmethod
    def _open(full: Path) -> str | None:
        """Decode the whole image once: `verify()` alone passes a PNG whose pixel data is corrupt."""
        if not full.is_file():
            return f"file not found at {full}"
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(full) as im:
                if im.width * im.height > MAX_PIXELS:
                    return (f"is {im.width}x{im.height} pixels, more than the {MAX_PIXELS:,} allowed; "
                            "downscale it (a vision tower sees a few hundred pixels a side)")
                im.load()
        except Image.DecompressionBombError as exc:
            return f"is too large to decode safely ({exc})"
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            return f"does not open as an image ({exc.__class__.__name__}: {exc})"
        return None


def parse_task_file(path: str | os.PathLike, images_dir: str | os.PathLike | None = None) -> ParsedFile:
    """Parse and validate a whole file; raise InvalidInput with every problem found (up to 20)."""
    from .fsio import sha256_file

    path = Path(path)
    if not path.is_file():
        raise InvalidInput(f"task file not found: {path}", hint="check the path")
    images = _ImageChecker(Path(images_dir) if images_dir else path.parent)
    if not images.root.is_dir():
        raise InvalidInput(f"image folder not found: {images.root}", hint="pass --images DIR")
    problems = _Problems()
    text = _decode(path, path.read_bytes(), problems)
    objects = _load_objects(path, text, problems) if text is not None else []
    records: list[dict] = []
    formats: list[str] = []
    seen_ids: dict[str, str] = {}
    for index, (where, obj) in enumerate(objects):
        if not isinstance(obj, dict):
            problems.add(where, f"expected a JSON object, got {type(obj).__name__}")
            continue
        if "conversations" in obj:
            fmt, parsed = "llava", _parse_llava(obj, where, problems)
        elif "question" in obj or "answer" in obj:
            fmt, parsed = "vqa", _parse_vqa(obj, where, problems)
        else:
            problems.add(where, "record has neither 'conversations' (LLaVA format) nor 'question'/'answer' (VQA format)")
            continue
        raw_id = obj.get("id", obj.get("question_id", index))
        if not isinstance(raw_id, (str, int)) or isinstance(raw_id, bool):
            problems.add(where, "'id' must be a string or an integer")
            continue
        rid = str(raw_id)
        if rid in seen_ids:
            problems.add(where, f"duplicate id {rid!r} (first at {seen_ids[rid]})")
            continue
        seen_ids[rid] = where
        image = obj.get("image")
        if not isinstance(image, str) or not image.strip():
            problems.add(where, "'image' must be a non-empty string (a path relative to the image folder)")
            continue
        full, err = images.check(image)
        if err:
            problems.add(where, err)
            continue
        if parsed is None:
            continue
        question, answer, history = parsed
        formats.append(fmt)
        records.append({"id": rid, "image": str(full), "question": question, "answer": answer, "history": history})
    if problems.count:
        raise InvalidInput(f"{path}: {problems.count} problem(s); nothing was added", problems.report(),
                           hint="fix the records above and run the command again")
    return ParsedFile(path=path, sha256=sha256_file(path), source_format=formats[0], records=records)


def split_records(records: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Deterministic train/test split by a seeded shuffle of record order."""
    if not 0.0 < fraction < 1.0:
        raise InvalidInput(f"--test-fraction must be between 0 and 1 (exclusive), got {fraction}")
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_test = max(1, round(len(records) * fraction))
    if n_test >= len(records):
        raise InvalidInput(f"{len(records)} record(s) are too few to split off a test set of {fraction:.0%}",
                           hint="add records or pass --test FILE")
    test_idx = set(order[:n_test])
    train = [r for i, r in enumerate(records) if i not in test_idx]
    test = [r for i, r in enumerate(records) if i in test_idx]
    return train, test


def overlap_warnings(train: list[dict], test: list[dict], *, same_file: bool = False) -> list[str]:
    """What makes the test split measure memory rather than generalisation: `--test` naming the
    training file itself, or test records that are also training records (the same image,
    question and answer; duplicates in one source file end up on both sides of a split)."""
    if same_file:
        return ["--test names the training file itself: every test record is also trained on, so the "
                "scores will overstate what the model learned; pass a held-out file, or --test-fraction"]
    def key(r: dict) -> tuple:  # a test record may hold a list of reference answers
        answer = r["answer"]
        return r["image"], r["question"], tuple(answer) if isinstance(answer, list) else answer

    seen = {key(r) for r in train}
    shared = sum(key(r) in seen for r in test)
    if not shared:
        return []
    return [f"{shared} of the {len(test)} test record(s) also appear in the training data (same image, "
            "question and answer): their scores measure memory, not generalisation; remove the duplicates"]


def guess_scorer(answers: list[str]) -> str:
    """Option letters -> choice; long free text -> caption; else exact."""
    answers = [a[0] if isinstance(a, list) else a for a in answers]
    if not answers:
        return "exact"
    if all(re.fullmatch(r"\(?[A-Ha-h]\)?\.?", a.strip()) for a in answers):
        return "choice"
    mean_words = sum(len(a.split()) for a in answers) / len(answers)
    return "caption" if mean_words >= 4 else "exact"


def check_name(name: str) -> str:
    if not NAME_RE.fullmatch(name):  # match() would let "abc\n" through ($ matches before a newline)
        raise InvalidInput(f"invalid task name {name!r}",
                           hint="use letters, digits, '.', '_' or '-' (at most 64 characters, starting with a letter or digit)")
    return name


def default_name(path: Path) -> str:
    """The file's stem, or its folder's name for generic stems such as train.jsonl."""
    stem = path.stem
    if stem.lower() in {"train", "data", "dataset", "annotations", "test", "all"}:
        stem = path.resolve().parent.name
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "task"


def write_records(path: Path, records: list[dict]) -> None:
    from .fsio import atomic_write_text

    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def relative_images(records: list[dict], folder: Path, workspace: Path) -> list[dict]:
    """`records` with each image that lies inside `workspace` given relative to `folder` (where
    the JSONL will live), so that a moved or copied workspace still finds its own images (the
    demo's benchmark lives in the workspace); images elsewhere keep their absolute path."""
    out = []
    for record in records:
        image = Path(record["image"])
        if image.is_relative_to(workspace):
            record = {**record, "image": Path(os.path.relpath(image, folder)).as_posix()}
        out.append(record)
    return out


def load_records(path: str | os.PathLike) -> list[dict]:
    """Normalised records written by `hicl add-task` (our own JSONL, one object a line), with
    every image as an absolute path: a relative one is taken against the file's folder; an
    absolute one that is gone may be found in this workspace (`_moved_image`)."""
    folder = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh if line.strip()]
    for record in records:
        image = record.get("image")
        if isinstance(image, str) and image and not os.path.isabs(image):
            record["image"] = os.path.normpath(os.path.join(folder, image))
        elif isinstance(image, str) and image and not os.path.exists(image):
            record["image"] = _moved_image(image, folder)
    return records


def _moved_image(image: str, folder: str) -> str:
    """Task files written before images inside the workspace were stored relative hold them
    absolute, under wherever the workspace was then: after a move or copy they point at the old
    place. Such a file is not rewritten (it is the task's record, and its hash would change);
    instead, when it lies in a workspace's tasks/NAME/ and the image's path, from a workspace
    folder on (cache/..., tasks/...), names a file of this workspace, that file is used. Paths
    outside any workspace folder, and files that cannot be found, are given back unchanged (the
    missing-image check then names them)."""
    from .settings import SUBDIRS

    here = Path(folder)
    if here.parent.name != "tasks":
        return image
    workspace = here.parent.parent
    parts = Path(image).parts
    for i, part in enumerate(parts[1:], start=1):
        if part in SUBDIRS:
            candidate = workspace.joinpath(*parts[i:])
            if candidate.is_file():
                return str(candidate)
    return image
