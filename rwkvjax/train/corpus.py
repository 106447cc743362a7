"""Text corpora for pretraining and offline hypernetwork training: files, package-level held-out split, reading.

A corpus is a list of roots (folders or files). A *package* is the first path component below its root
(`<site-packages>/numpy`, `<stdlib>/json`, `/usr/share/doc/git`; a file directly in a root is its own
package). Whole packages are held out, never single files of a package the model trained on, and a
held-out file whose exact bytes also occur in training is dropped from the held-out side.
"""

from __future__ import annotations

import gzip
import hashlib
import sysconfig
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from rwkvjax.errors import DataError, MissingFile

TEXT_SUFFIXES = {".py", ".pyi", ".txt", ".md", ".rst", ".c", ".h", ".cc", ".cpp", ".sh", ".bash", ".toml", ".cfg",
                 ".ini", ".json", ".yaml", ".yml", ".html", ".css", ".js", ".ts", ".mjs", ".csv", ".xml", ".tex"}
MAN_SUFFIXES = {".1", ".2", ".3", ".4", ".5", ".6", ".7", ".8"}


def default_roots() -> list[str]:
    """Offline text on every machine of this kind: the standard library, installed packages, docs, man pages."""
    paths = sysconfig.get_paths()
    roots = [paths["stdlib"], paths["purelib"], "/usr/share/doc", "/usr/share/man/man1", "/usr/share/man/man5",
             "/usr/share/man/man7", "/usr/share/man/man8"]
    return [r for r in dict.fromkeys(roots) if Path(r).exists()]


def _wanted(f: Path) -> bool:
    if f.suffix in TEXT_SUFFIXES:
        return True
    return f.suffix == ".gz" and Path(f.stem).suffix in MAN_SUFFIXES  # man pages (troff source)


def corpus_files(paths) -> list[Path]:
    """Text files under the roots (a `site-packages` below a given root, e.g. inside the stdlib, is skipped)."""
    files = []
    for p in map(Path, paths):
        if p.is_file():
            files.append(p)
        elif p.is_dir():
            for f in p.rglob("*"):
                rel = f.relative_to(p).parts
                if f.is_file() and _wanted(f) and "site-packages" not in rel and "__pycache__" not in rel:
                    files.append(f)
        else:
            raise MissingFile(f"--corpus {p}: no such file or folder")
    return sorted(set(files))


def package_of(f: Path, roots: Iterable[str | Path]) -> str:
    """`<root name>/<first component>` of the deepest root holding `f`."""
    best = None
    for r in map(Path, roots):
        try:
            rel = f.relative_to(r)
        except ValueError:
            continue
        if best is None or len(r.parts) > len(best[0].parts):
            best = (r, rel)
    if best is None:
        return f.name
    root, rel = best
    first = rel.parts[0] if len(rel.parts) > 1 else rel.stem.split(".")[0]
    return f"{root.name}/{first}"


def _hash_pick(name: str, k: int) -> bool:
    return int(hashlib.sha256(name.encode()).hexdigest(), 16) % k == 0


def _is_heldout(path: Path, k: int) -> bool:
    """Per-file split of the first shipped model (kept to reproduce its figures)."""
    return _hash_pick(str(path), k)


def read_text_files(files, stats: dict, max_file_bytes: int | None = None) -> Iterator[tuple[Path, bytes, str]]:
    """Yield (path, raw bytes, text) for every UTF-8 file (man pages decompressed, long files cut at
    `max_file_bytes` on a line end); others (NUL bytes, bad UTF-8, unreadable) count in stats['skipped_binary']."""
    for f in files:
        try:
            raw = gzip.decompress(f.read_bytes()) if f.suffix == ".gz" else f.read_bytes()
        except (OSError, EOFError):
            stats["skipped_binary"] += 1
            continue
        if b"\0" in raw:
            stats["skipped_binary"] += 1
            continue
        if max_file_bytes and len(raw) > max_file_bytes:
            cut = raw.rfind(b"\n", 0, max_file_bytes)
            raw = raw[:cut + 1 if cut > 0 else max_file_bytes]
            stats["truncated"] = stats.get("truncated", 0) + 1
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            stats["skipped_binary"] += 1
            continue
        yield f, raw, text


def build_corpus(cfg, tokenizer) -> tuple[np.ndarray, list[tuple[str, np.ndarray]], dict]:
    """(train stream, held-out documents [(path, ids)], summary).

    Train documents are shuffled (seeded) and joined with id 0 (document separator); whole packages go to
    the held-out side (`cfg.heldout_packages` by name, else every `cfg.heldout_every`-th by hash).
    """
    roots = list(cfg.corpus)
    files = corpus_files(roots)
    by_pkg: dict[str, list[Path]] = {}
    for f in files:
        by_pkg.setdefault(package_of(f, roots), []).append(f)
    named = set(cfg.heldout_packages)
    missing = named - set(by_pkg)
    if missing:
        raise DataError(f"--heldout-packages {sorted(missing)}: no such package under the corpus roots "
                        f"(packages look like {sorted(by_pkg)[:3]})")
    held_pkgs = {p for p in by_pkg if p in named or (not named and _hash_pick(p, cfg.heldout_every))}
    stats = {"roots": roots, "files": 0, "skipped_binary": 0, "bytes": 0, "train_files": 0, "heldout_files": 0,
             "packages": len(by_pkg), "heldout_packages": sorted(held_pkgs), "dropped_heldout_duplicates": 0}
    seen: set[bytes] = set()
    train, held = [], []
    order = sorted(files, key=lambda f: hashlib.sha256(f"{cfg.seed}:{f}".encode()).digest())
    for f, raw, text in read_text_files(order, stats, cfg.max_file_bytes):
        if not text.strip():
            continue
        digest = hashlib.sha256(raw).digest()
        is_held = package_of(f, roots) in held_pkgs
        if not is_held:
            if digest in seen:
                continue  # an exact copy (vendored file): train on it once
            seen.add(digest)
            train.append((digest, np.asarray(tokenizer.encode(text) + [0], np.int32)))
            stats["train_files"] += 1
        else:
            held.append((digest, str(f), np.asarray(tokenizer.encode(text), np.int32)))
        stats["files"] += 1
        stats["bytes"] += len(raw)
        if stats["bytes"] >= cfg.max_bytes:
            break
    clean = [(p, ids) for d, p, ids in held if d not in seen]
    stats["dropped_heldout_duplicates"] = len(held) - len(clean)
    stats["heldout_files"] = len(clean)
    if not train or not clean:
        raise DataError(f"--corpus {roots}: found no usable text files for both splits")
    dtype = np.uint8 if tokenizer.vocab_size <= 256 else np.int32
    stream = np.concatenate([ids for _, ids in train]).astype(dtype)
    stats.update(train_tokens=int(stream.size), heldout_tokens=int(sum(ids.size for _, ids in clean)))
    return stream, clean, stats
