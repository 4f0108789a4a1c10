"""Paths users name: where a dataset's files may go, and whether a folder can be written at all.

:func:`export_dir` is the one check of an ``output_dir`` (POST /datasets/generate, `dset datasets
generate`, a job resumed from the log): the folder must stay inside the data dir once symlinks are
followed, must not be one of the data dir's own files or folders (the log, locks, snapshots, uploads,
tmp), and must be short enough for any file system. :func:`cli_export_dir` is `dset export
--output-dir`, which may also name any folder outside the data dir, but never reach one through a
symlink planted inside it. This module imports nothing of dsetlog, so any module can use it.
"""

from __future__ import annotations

import os
import tempfile
import unicodedata
from pathlib import Path, PurePosixPath

from dsetlog.errors import UsageError

# the data dir's own entries (first component of a path inside it, compared case-insensitively); names
# starting with events.jsonl (the log, its .lock, .torn, .bak-*, .rejected-*) or a dot are refused too
RESERVED_NAMES = frozenset({"events.jsonl", "locks", "snapshots", "uploads", "tmp"})
MAX_OUTPUT_DIR_BYTES = 1024  # the whole output_dir, UTF-8
MAX_COMPONENT_BYTES = 128  # one folder name (file systems allow 255; the dataset's files add to it)
MAX_OUTPUT_DIR_DEPTH = 16  # folders in output_dir


class OutputDirError(UsageError, ValueError):
    """An output_dir that cannot be used; the message names the field and says what to give instead."""


def export_dir(data_dir: str | os.PathLike[str], output_dir: str, dataset_id: str | None = None, *,
               field: str = "output_dir") -> Path:
    """The resolved folder inside ``data_dir`` that ``output_dir`` (relative to it) names; a dataset's
    files go into ``<folder>/<dataset_id>``, which is checked too when ``dataset_id`` is given.

    OutputDirError (naming ``field``) when output_dir holds a NUL or control character, is absolute, has
    '..', is too long, names one of the data dir's own entries, leaves the data dir through a symlink,
    or passes through something that is not a folder.
    """
    if not isinstance(output_dir, str):
        raise OutputDirError(f"{field} must be text: a folder inside the data directory, such as 'exports'")
    shown = _shown(output_dir)
    if "\x00" in output_dir or any(unicodedata.category(c) == "Cc" for c in output_dir):
        raise OutputDirError(f"{field} {shown} holds a NUL or control character; give a plain folder name, "
                             "such as 'exports'")
    text = output_dir.replace("\\", "/")
    if text.startswith("/") or text[1:3] == ":/":
        raise OutputDirError(f"{field} {shown} must be a relative folder inside the data directory, without '..'")
    rel = PurePosixPath(text)
    if ".." in rel.parts:
        raise OutputDirError(f"{field} {shown} must be a relative folder inside the data directory, without '..'")
    if len(text.encode("utf-8")) > MAX_OUTPUT_DIR_BYTES or len(rel.parts) > MAX_OUTPUT_DIR_DEPTH:
        raise OutputDirError(f"{field} is too long ({len(text.encode('utf-8')):,} bytes, {len(rel.parts)} folders); "
                             f"give at most {MAX_OUTPUT_DIR_DEPTH} folders and {MAX_OUTPUT_DIR_BYTES} bytes")
    for part in rel.parts:
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise OutputDirError(f"{field}: the folder name {_shown(part, 40)} is {len(part.encode('utf-8'))} "
                                 f"bytes long; give names of at most {MAX_COMPONENT_BYTES} bytes")
    if rel.parts and _reserved(rel.parts[0]):
        raise OutputDirError(_reserved_message(field, shown, rel.parts[0]))
    root = _resolve(Path(data_dir), field, shown)
    folder = root.joinpath(*rel.parts)
    target = folder / dataset_id if dataset_id else folder
    resolved = _resolve(target, field, shown)
    _check_inside(root, resolved, field, shown)
    _check_folders(root, resolved, field, shown)
    return _resolve(folder, field, shown)


def cli_export_dir(data_dir: str | os.PathLike[str], output_dir: str, dataset_id: str) -> Path:
    """`dset export --output-dir`: a relative path is a folder of the data dir (:func:`export_dir`); an absolute
    one may be anywhere, but a path that reaches into the data dir (lexically or through a symlink) is held to
    export_dir's rules there, so a symlink planted inside the data dir cannot send files elsewhere."""
    field = "--output-dir"
    given = Path(os.path.expanduser(output_dir))
    if not given.is_absolute():
        return export_dir(data_dir, output_dir, dataset_id, field=field)
    shown = _shown(output_dir)
    if "\x00" in output_dir:
        raise OutputDirError(f"{field} {shown} holds a NUL byte; give a plain folder path")
    root_lexical = Path(os.path.abspath(data_dir))
    root = _resolve(Path(data_dir), field, shown)
    lexical = Path(os.path.abspath(given))
    for base in (root_lexical, root):
        if lexical == base or base in lexical.parents:  # named inside the data dir: its rules, symlinks checked
            return export_dir(base, lexical.relative_to(base).as_posix() or ".", dataset_id, field=field)
    resolved = _resolve(given / dataset_id, field, shown)
    if resolved == root or root in resolved.parents:  # outside by name, inside by a symlink: the same rules
        relative = resolved.relative_to(root)
        if not relative.parts or _reserved(relative.parts[0]):
            raise OutputDirError(_reserved_message(field, shown, relative.parts[0] if relative.parts else "."))
    _check_folders(Path(resolved.anchor), resolved, field, shown)
    return _resolve(given, field, shown)


def check_writable(folder: str | os.PathLike[str], what: str) -> None:
    """OSError-free proof that files can be created in ``folder`` (or, when it does not exist yet, in the
    nearest folder above it that does): a temporary file is made and removed. ``what`` names the option in
    the message of the ValueError raised otherwise."""
    path = Path(folder)
    try:
        probe = path.absolute()
        while not probe.exists() and probe.parent != probe:
            probe = probe.parent
        if not probe.is_dir():
            raise OutputDirError(f"{what} {path}: {probe} is a file, not a folder; give a folder")
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise OutputDirError(f"{what} {path}: cannot write there ({exc.strerror or exc}); give a folder you can "
                         "write to") from None


def _shown(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _reserved(name: str) -> bool:
    folded = name.casefold()
    return folded in RESERVED_NAMES or folded.startswith("events.jsonl") or folded.startswith(".")


def _reserved_message(field: str, shown: str, name: str) -> str:
    return (f"{field} {shown} is the data directory's own {name!r} (the data dir keeps its log, locks, snapshots, "
            "uploads and tmp there); give a folder of your own, such as 'exports'")


def _resolve(path: Path, field: str, shown: str) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop, a name too long for the file system
        raise OutputDirError(f"{field} {shown} cannot be used ({getattr(exc, 'strerror', None) or exc}); "
                             "give another folder") from None


def _check_inside(root: Path, resolved: Path, field: str, shown: str) -> None:
    if resolved != root and root not in resolved.parents:
        raise OutputDirError(f"{field} {shown} leads outside the data directory (through a symlink, to "
                             f"{resolved}); give a folder inside it, such as 'exports'")
    relative = resolved.relative_to(root)
    if relative.parts and _reserved(relative.parts[0]):
        raise OutputDirError(_reserved_message(field, shown, relative.parts[0]))


def _check_folders(root: Path, resolved: Path, field: str, shown: str) -> None:
    """Every part of the path that exists already must be a folder (the files are written inside it)."""
    current = root
    for part in resolved.relative_to(root).parts:
        current = current / part
        if not current.exists():
            return
        if not current.is_dir():
            raise OutputDirError(f"{field} {shown}: {current} is a file, not a folder; give another folder")
