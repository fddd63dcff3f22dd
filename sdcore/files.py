"""Reading files that may be damaged or hostile, with every problem as one ``FileProblem`` line.

Run folders are shared, copied, edited by hand and filled by processes that die mid-write, and a
config file can be anything a user points at. These readers never block (a FIFO), never follow a
symbolic link, never read more than a size limit, and turn every decoding or structure problem
(not UTF-8, not JSON, nested past the parser's recursion limit, the wrong JSON type) into a short
reason; callers wrap it in their own error (``RunError``, ``ConfigError``) with the file's name.
"""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path
from typing import Any, BinaryIO, Callable, TypeVar

import torch

JSON_LIMIT = 64 * 2**20  # bytes: run JSON files are kilobytes; metrics.jsonl of a long run a few MB

T = TypeVar("T")


class FileProblem(ValueError):
    """Why a file cannot be read, as a short reason without the file's name ("is not UTF-8 text")."""


def _reason(e: OSError) -> str:
    if e.errno == errno.ENOENT:
        return "is missing"
    if e.errno == errno.ELOOP:
        return "is a symbolic link (sdlab writes only regular files)"
    if e.errno == errno.ENOTDIR:
        return "is missing (a file stands where its folder should be)"
    if e.errno == errno.EACCES:
        return "cannot be read (permission denied)"
    return f"cannot be read ({e.strerror or type(e).__name__})"


def open_regular(path: Path) -> BinaryIO:
    """``path`` opened for binary reading if it is a regular file, not through a symbolic link; else FileProblem.

    O_NONBLOCK: opening a FIFO must not wait for a writer (the fstat check then refuses it).
    """
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        raise FileProblem(_reason(e)) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise FileProblem("is a folder, not a file" if stat.S_ISDIR(mode) else "is not a regular file")
    return os.fdopen(fd, "rb")


def read_bytes(path: Path, limit: int = JSON_LIMIT) -> bytes:
    """The whole file, refused when larger than ``limit`` bytes (checked before reading)."""
    with open_regular(path) as f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise FileProblem(f"is too large ({size / 2**20:.0f} MB; at most {limit / 2**20:.0f} MB expected)")
        try:
            return f.read(limit + 1)
        except OSError as e:
            raise FileProblem(_reason(e)) from None


def read_text(path: Path, limit: int = JSON_LIMIT) -> str:
    try:
        return read_bytes(path, limit).decode("utf-8")
    except UnicodeDecodeError as e:
        raise FileProblem(f"is not UTF-8 text (byte {e.start})") from None


def parse_json(text: str) -> Any:
    """json.loads with its failures as FileProblem (a deep nesting exhausts the parser's recursion)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise FileProblem(f"is not valid JSON ({e.msg} at line {e.lineno})") from None
    except RecursionError:
        raise FileProblem("is nested too deeply to be sdlab's JSON") from None
    except ValueError as e:  # an integer past Python's 4300-digit limit
        raise FileProblem(f"is not sdlab's JSON ({first_line(e)})") from None


def read_json_object(path: Path, limit: int = JSON_LIMIT) -> dict[str, Any]:
    obj = parse_json(read_text(path, limit))
    if not isinstance(obj, dict):
        raise FileProblem(f"holds a JSON {_json_type(obj)}, not an object")
    return obj


def _json_type(obj: Any) -> str:
    return {list: "array", str: "string", bool: "boolean", type(None): "null"}.get(type(obj), "number")


def load_torch(path: Path, *, map_location: Any = "cpu") -> Any:
    """torch.load of a regular file with ``weights_only=True`` (a pickle that would run code is refused,
    never executed); a damaged, truncated or foreign file is a FileProblem with torch's first line."""
    with open_regular(path) as f:
        try:
            return torch.load(f, map_location=map_location, weights_only=True)
        except Exception as e:  # noqa: BLE001 - torch raises RuntimeError, UnpicklingError, EOFError, ...
            detail = first_line(e).split(". ")[0]  # torch's first sentence; the rest is generic advice
            raise FileProblem(f"is damaged or not a PyTorch file ({detail})") from None


def first_line(e: BaseException, limit: int = 200) -> str:
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else type(e).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"


def checked(check: Callable[[], T], what: str) -> T:
    """``check()``, with a TypeError/KeyError/ValueError from walking a parsed structure as a FileProblem."""
    try:
        return check()
    except FileProblem:
        raise
    except (TypeError, KeyError, ValueError, IndexError, AttributeError) as e:
        raise FileProblem(f"has a bad {what} ({first_line(e)})") from None


def unreadable(folder: Path) -> list[str]:
    """What in ``folder`` (a run folder, recursively) does not read back whole: each temp file left behind and
    each .json / .jsonl / .pt that does not parse, as "<relative path>: <why>"; [] for an intact folder (the
    SIGKILL tests and benchmarks/reliability.py check every folder they kill with it)."""
    problems = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder)
        if p.is_dir() or p.name == "lock":
            continue
        if p.name.endswith(".tmp"):
            problems.append(f"{rel}: a temp file left behind")
            continue
        try:
            if p.suffix == ".json":
                parse_json(read_text(p))
            elif p.suffix == ".jsonl":
                [parse_json(line) for line in read_text(p).splitlines()]
            elif p.suffix == ".pt":
                load_torch(p)
        except (OSError, ValueError) as e:  # FileProblem is a ValueError
            problems.append(f"{rel}: {first_line(e)}")
    return problems
