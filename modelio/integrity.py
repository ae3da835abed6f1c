"""A version's integrity record: checksums written at export, verified before serving.

A copy of version 1 as version 7 with its ``classes`` list reversed was served with
every label permuted: nothing tied ``metadata.json`` to the model it describes. So the
exporter puts an ``integrity`` block into ``metadata.json`` (:func:`integrity_record`):
the SHA-256 of every file of the version and of the metadata itself (less ``version``,
which is numbered when the version is published, and the block). The service verifies
it before loading a version (:func:`verify_integrity`) and refuses one that differs,
with the reason in ``/models``.

What it is: a consistency check against hand edits, partial copies and bit rot. What it
is not: a signature. Anyone who can write a version folder can also recompute the block
(:func:`seal` does, for tools and tests that change a version on purpose).

Files the record lists but a deployment left out (the SavedModel beside a service that
runs only TFLite, the reports) are not required here: the loader says what it needs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from modelio.artifact import METADATA_FILE, ArtifactError

INTEGRITY_KEY = "integrity"
ALGORITHM = "sha256"
#: Metadata keys the checksum leaves out: set at publication, or the record itself.
UNSEALED_KEYS = ("version", INTEGRITY_KEY)
_CHUNK = 1 << 20


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _metadata_sha256(metadata: dict[str, Any]) -> str:
    """Of the metadata as JSON would give it back (sorted keys, no spaces), sealed keys
    left out, so the same document hashes the same before and after it is written."""
    sealed = {key: value for key, value in metadata.items() if key not in UNSEALED_KEYS}
    canonical = json.dumps(
        json.loads(json.dumps(sealed)), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _files(version_dir: Path) -> dict[str, Path]:
    return {
        path.relative_to(version_dir).as_posix(): path
        for path in sorted(version_dir.rglob("*"))
        if path.is_file() and path.name != METADATA_FILE
    }


def integrity_record(version_dir: Path, metadata: dict[str, Any]) -> dict[str, Any]:
    """The ``integrity`` block for a version folder whose files are all written and whose
    ``metadata.json`` will hold ``metadata`` (called by the exporter just before it
    publishes the version)."""
    return {
        "algorithm": ALGORITHM,
        "metadata": _metadata_sha256(metadata),
        "files": {name: _file_sha256(path) for name, path in _files(Path(version_dir)).items()},
    }


def verify_integrity(version_dir: Path, metadata: dict[str, Any]) -> bool:
    """True when the version carries a record and matches it, False when it carries
    none (exported before records existed); :class:`ArtifactError` naming what differs."""
    record = metadata.get(INTEGRITY_KEY)
    if record is None:
        return False
    if (
        not isinstance(record, dict)
        or record.get("algorithm") != ALGORITHM
        or not isinstance(record.get("files"), dict)
    ):
        raise ArtifactError(f"metadata.json's '{INTEGRITY_KEY}' block is malformed")
    if record.get("metadata") != _metadata_sha256(metadata):
        raise ArtifactError(
            "metadata.json was changed after export (its checksum differs from the one "
            "written then): its classes, input or outputs may no longer describe the model; "
            "re-export or re-assemble the version"
        )
    changed = [
        name
        for name, expected in sorted(record["files"].items())
        if (Path(version_dir) / name).is_file()
        and _file_sha256(Path(version_dir) / name) != expected
    ]
    if changed:
        raise ArtifactError(
            f"{', '.join(changed[:3])}{' and others' if len(changed) > 3 else ''} changed "
            "after export (checksum differs from the one written then); re-export the version"
        )
    return True


def seal(version_dir: Path) -> None:
    """Rewrite a version's record from its files as they are now: for a tool or test
    that changes a version on purpose (never done by the service)."""
    path = Path(version_dir) / METADATA_FILE
    metadata = json.loads(path.read_text(encoding="utf-8"))
    metadata[INTEGRITY_KEY] = integrity_record(Path(version_dir), metadata)
    path.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
