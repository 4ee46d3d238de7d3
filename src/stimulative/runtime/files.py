"""Result files written so that a crash never leaves half a file: JSON documents replaced
atomically, JSON-lines records appended and flushed, records of redone work dropped."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any


def read_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def read_json_or_none(path: str) -> Any | None:
    """The document at ``path``, or None if it is missing or unreadable (a crash mid-write)."""
    try:
        return read_json(path)
    except (OSError, ValueError):
        return None


def write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` atomically (a temporary file, synced, then renamed)."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def write_json(path: str, data: Any, indent: int | None = 1) -> None:
    """Write ``data`` as JSON to ``path`` atomically."""
    write_text(path, json.dumps(data, indent=indent))


def append_record(path: str, record: dict) -> None:
    """Append one JSON-lines record, flushed to disk at once."""
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_records(path: str) -> list[dict]:
    """The JSON-lines records of ``path`` (none if missing); a partial line left by a crash
    is skipped."""
    records = []
    if not os.path.exists(path):
        return records
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict):
                records.append(record)
    return records


def truncate_records(path: str, keep: Callable[[dict], bool]) -> None:
    """Keep the JSON-lines records of ``path`` for which ``keep(record)`` holds, dropping
    work that a resumed run redoes and any partial line left by a crash, so the file reads
    as one uninterrupted run. Rewritten atomically."""
    if not os.path.exists(path):
        return
    kept = []
    for record in read_records(path):
        try:
            if keep(record):
                kept.append(json.dumps(record) + "\n")
        except (KeyError, TypeError):
            continue
    write_text(path, "".join(kept))
