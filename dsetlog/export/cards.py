"""What tells the trainers which files form a dataset: a Hugging Face dataset card (README.md whose YAML
``configs`` name each format's files per split, so ``datasets.load_dataset(folder)`` gives train, validation
and test rather than one set of every file), and LLaMA-Factory's ``dataset_info.json`` registering each
instruction file (each split, each batch part) under its own name with its ``formatting``, ``columns`` and
``tags``.

Both describe the files present in the folder, whichever export wrote them (formats share a folder), and
are rewritten after every export. A README.md or a dataset_info.json entry that dset did not write is kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from dsetlog.fsutil import atomic_write_bytes

CARD = "README.md"
DATASET_INFO = "dataset_info.json"
MARKER = "<!-- written by dset: rewritten on every export; edit the dataset, not this file -->"
SPLITS = ("train", "validation", "test")

# LLaMA-Factory's dataset description of each instruction format (data/README.md of LLaMA-Factory: alpaca
# columns prompt/query/response/system; sharegpt with its tags; the OpenAI messages as sharegpt with role tags)
_SHAREGPT_TAGS = {"role_tag": "from", "content_tag": "value", "user_tag": "human", "assistant_tag": "gpt",
                  "system_tag": "system"}
_OPENAI_TAGS = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant",
                "system_tag": "system"}


def llamafactory_entry(fmt: str, file_name: str, *, system_column: bool) -> dict[str, Any]:
    """LLaMA-Factory's dataset_info.json entry for one file of an instruction format."""
    if fmt == "alpaca":
        columns = {"prompt": "instruction", "query": "input", "response": "output"}
        if system_column:
            columns["system"] = "system"
        return {"file_name": file_name, "formatting": "alpaca", "columns": columns}
    if fmt == "sharegpt":
        return {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "conversations"},
                "tags": dict(_SHAREGPT_TAGS)}
    if fmt == "openai-chat":
        return {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "messages"},
                "tags": dict(_OPENAI_TAGS)}
    raise ValueError(f"{fmt} is not an instruction format")


def split_files(folder: Path, suffix: str) -> dict[str, list[str]]:
    """A document export's non-empty files of one format, by split (``dataset`` files as train), parts in
    order. An empty file is left out: Hugging Face datasets refuses a split with no rows."""
    found: dict[str, list[str]] = {}
    for stem in ("dataset", *SPLITS):
        pattern = re.compile(rf"{stem}(_part\d{{4}})?{re.escape(suffix)}")
        names = sorted(p.name for p in folder.iterdir() if pattern.fullmatch(p.name) and _rows(p))
        if names:
            found.setdefault("train" if stem == "dataset" else stem, []).extend(names)
    return found


def _rows(path: Path) -> bool:
    """Whether a file holds rows (a parquet file with none still has its schema: it is read, and kept)."""
    if path.suffix == ".parquet":
        return True
    with open(path, "rb") as fh:
        return bool(fh.read(1)) and (path.suffix != ".csv" or bool(fh.readline() and fh.readline()))


def _first_row(folder: Path, names: Iterable[str]) -> dict[str, Any]:
    for name in names:
        with open(folder / name, encoding="utf-8") as fh:
            line = fh.readline()
        if line.strip():
            row = json.loads(line)
            return row if isinstance(row, dict) else {}
    return {}


# --- features: the card says each config's column types, so every split (and a jsonl and a parquet file)
# loads with the same ones: timestamps as timestamps, a column with no value yet still a string or a number

_ENTRY_TYPES = {"quality_score": "float64", "quality_analyzed": "bool", "simulated": "bool", "created_at": "timestamp[us, tz=UTC]",
                "updated_at": "timestamp[us, tz=UTC]", "revision": "int64", "prompt_tokens": "int64",
                "completion_tokens": "int64"}


def _strings(names: Iterable[str], indent: str) -> list[str]:
    return [line for n in names for line in (f"{indent}- name: {_yaml_str(n)}", f"{indent}  dtype: string")]


def _features(fmt: str, folder: Path, names: Sequence[str], entry_columns: Sequence[str]) -> list[str]:
    """The YAML lines of a config's ``features`` (indented for the dataset_info list); none for parquet, whose
    file has its types, and csv, whose reader infers them."""
    if fmt in ("parquet", "csv"):
        return []
    if fmt == "jsonl":
        return [line for n in entry_columns for line in
                (f"  - name: {n}", f"    dtype: {_yaml_str(_ENTRY_TYPES.get(n, 'string'))}")]
    if fmt == "json":  # the seed's output.json
        return ["  - name: metadata", "    struct:", *_strings(("timestamp", "question"), "    "),
                "  - name: response", "    struct:", *_strings(("reasoning", "answer"), "    ")]
    row = _first_row(folder, names)
    if fmt == "alpaca":
        return _strings([k for k in ("instruction", "input", "output", "system") if k in row or k != "system"], "  ")
    field = "conversations" if fmt == "sharegpt" else "messages"
    keys = ["from", "value"] if fmt == "sharegpt" else ["role", "content"]
    keys += [k for m in row.get(field, []) for k in m if k not in keys]
    return [f"  - name: {field}", "    list:", *_strings(dict.fromkeys(keys), "    ")]


def _yaml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML string


def card_text(title: str, configs: Sequence[Config], default: str, about: str) -> str:
    """The README.md: YAML front matter with one config per format (``default`` first and marked default),
    its files per split and its features, then a few lines for people."""
    ordered = sorted(configs, key=lambda c: c.name != default)
    lines = ["---", "configs:"]
    for c in ordered:
        lines.append(f"- config_name: {_yaml_str(c.name)}")
        if c.name == default:
            lines.append("  default: true")
        lines.append("  data_files:")
        for split, files in c.splits.items():
            lines += [f"  - split: {split}", "    path:", *(f"    - {_yaml_str(f)}" for f in files)]
    typed = [c for c in ordered if c.features]
    if typed:
        lines.append("dataset_info:")
    for c in typed:
        lines += [f"- config_name: {_yaml_str(c.name)}", "  features:", *c.features]
    lines += ["---", MARKER, "", f"# {title}", "", about, "", "| config | splits and files |", "|---|---|"]
    for c in ordered:
        lines.append(f"| {c.name} | " + "; ".join(f"{s}: {', '.join(fs)}" for s, fs in c.splits.items()) + " |")
    return "\n".join(lines) + "\n"


class Config(NamedTuple):
    """One config of the card: its name (the format's), its files per split, its features' YAML lines."""

    name: str
    splits: dict[str, list[str]]
    features: list[str]


def write_card(folder: Path, text: str) -> Path | None:
    """README.md, unless the folder has one dset did not write (then it is left as it is: None)."""
    target = folder / CARD
    if target.exists() and MARKER not in target.read_text(encoding="utf-8", errors="replace"):
        return None
    atomic_write_bytes(target, text.encode("utf-8"))
    return target


def write_dataset_info(folder: Path, entries: dict[str, dict[str, Any]], ours: Iterable[str]) -> Path:
    """dataset_info.json with ``entries``; an entry already there is kept unless it names one of ``ours``
    (the files dset writes in this folder, present or not) or has the name of one of ``entries``."""
    target = folder / DATASET_INFO
    own = set(ours)
    kept: dict[str, Any] = {}
    if target.exists():
        try:
            existing = json.loads(target.read_text(encoding="utf-8"))
        except ValueError:
            existing = {}
        if isinstance(existing, dict):
            kept = {k: v for k, v in existing.items()
                    if not (isinstance(v, dict) and v.get("file_name") in own) and k not in entries}
    text = json.dumps({**kept, **entries}, indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(target, text.encode("utf-8"))
    return target


# Hugging Face datasets reads every config of a card with the builder of the first one's files: a card
# names the configs of one file type (json: jsonl and the instruction formats; parquet; csv)
BUILDER = {"jsonl": "json", "json": "json", "alpaca": "json", "sharegpt": "json", "openai-chat": "json",
           "parquet": "parquet", "csv": "csv"}


def write_cards(folder: Path, *, title: str, default: str, files: dict[str, dict[str, list[str]]],
                entry_columns: Sequence[str], instruction: Sequence[str], ours: Iterable[str]) -> list[Path]:
    """The card and dataset_info.json of a folder. ``files``: each format present, its files per split;
    ``default``: the format just written, the card's default config (with the others of its file type);
    ``ours``: every file name dset may write there (dataset_info.json entries naming them are dset's)."""
    configs = [Config(fmt, splits, _features(fmt, folder, [f for fs in splits.values() for f in fs], entry_columns))
               for fmt, splits in files.items() if splits and BUILDER[fmt] == BUILDER[default]]
    info: dict[str, dict[str, Any]] = {}
    for fmt, splits in files.items():
        if fmt not in instruction:
            continue
        names = [f for fs in splits.values() for f in fs]
        system = "system" in _first_row(folder, names)
        for name in names:
            info[_info_name(fmt, name)] = llamafactory_entry(fmt, name, system_column=system)
    others = [f"{fmt}: {', '.join(f for fs in splits.values() for f in fs)}" for fmt, splits in files.items()
              if splits and BUILDER[fmt] != BUILDER[default]]
    about = ("Hugging Face datasets: `load_dataset(\"<this folder>\")` (the default config) or "
             "`load_dataset(\"<this folder>\", \"<config>\")`. LLaMA-Factory: `dataset_dir: <this folder>` and a "
             "dataset name from dataset_info.json (one per split and batch part)."
             + (f" Also here, read with their own loader: {'; '.join(others)}." if others else ""))
    written = [write_dataset_info(folder, info, ours)] if info or (folder / DATASET_INFO).exists() else []
    if configs:
        card = write_card(folder, card_text(title, configs, default, about))
        written += [card] if card is not None else []
    elif (folder / CARD).exists() and MARKER in (folder / CARD).read_text(encoding="utf-8", errors="replace"):
        (folder / CARD).unlink()  # nothing to load (no rows yet): a card naming files would fail to load
    return written


def write_output_cards(folder: Path, written: dict[str, Path], *, title: str,
                       entry_columns: Sequence[str], instruction: Sequence[str], ours: Iterable[str]) -> list[Path]:
    """The card and dataset_info.json of `dset generate`'s --out folder: each format's one file, as train.
    The default config is the full jsonl when it was written, else the seed's output.json."""
    files = {fmt: {"train": [path.name]} for fmt, path in written.items() if fmt in BUILDER and _rows(path)}
    default = next((f for f in ("jsonl", "json", *instruction) if f in files), "json")
    return write_cards(folder, title=title, default=default, files=files, entry_columns=entry_columns,
                       instruction=instruction, ours=ours)


def _info_name(fmt: str, file_name: str) -> str:
    """A file's name in dataset_info.json: the format, then the split and part (alpaca_train_part0002)."""
    stem = file_name.split(".", 1)[0]
    prefix = fmt.replace("-", "_")
    return prefix if stem in ("dataset", "alpaca", "sharegpt", "openai_chat") else f"{prefix}_{stem}"
