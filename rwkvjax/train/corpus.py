"""Text corpora for pretraining and offline hypernetwork training: files, held-out split, UTF-8 reading."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from rwkvjax.errors import DataError, MissingFile

TEXT_SUFFIXES = {".py", ".txt", ".md", ".rst", ".c", ".h", ".sh", ".toml", ".cfg", ".json", ".html", ".css", ".js"}


def corpus_files(paths) -> list[Path]:
    files = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            files.extend(f for f in p.rglob("*") if f.is_file() and f.suffix in TEXT_SUFFIXES
                         and "site-packages" not in f.parts)
        else:
            raise MissingFile(f"--corpus {p}: no such file or folder")
    return sorted(set(files))


def _is_heldout(path: Path, k: int) -> bool:
    return int(hashlib.sha256(str(path).encode()).hexdigest(), 16) % k == 0


def read_text_files(files, stats: dict):
    """Yield (path, raw bytes, text) for every UTF-8 file; others (NUL bytes, bad UTF-8) count in stats['skipped_binary']."""
    for f in files:
        raw = f.read_bytes()
        if b"\0" in raw:
            stats["skipped_binary"] += 1
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            stats["skipped_binary"] += 1
            continue
        yield f, raw, text


def build_corpus(cfg, tokenizer) -> tuple[np.ndarray, np.ndarray, dict]:
    """(train ids, held-out ids, summary). Files that are not UTF-8 text are skipped and counted."""
    train, held, stats = [], [], {"files": 0, "skipped_binary": 0, "bytes": 0}
    for f, raw, text in read_text_files(corpus_files(cfg.corpus), stats):
        ids = tokenizer.encode(text) + [0]  # 0 separates documents
        (held if _is_heldout(f, cfg.heldout_every) else train).append(np.asarray(ids, np.int32))
        stats["files"] += 1
        stats["bytes"] += len(raw)
        if stats["bytes"] >= cfg.max_bytes:
            break
    if not train or not held:
        raise DataError(f"--corpus {list(cfg.corpus)}: found no usable text files for both splits")
    tr, he = np.concatenate(train), np.concatenate(held)
    stats.update(train_tokens=int(tr.size), heldout_tokens=int(he.size))
    return tr, he, stats
