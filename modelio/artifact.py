"""The exported model's on-disk contract, readable without TensorFlow.

Layout (TF Serving's)::

    <models_dir>/<name>/<N>/            N a positive integer, one folder per version
        saved_model.pb, variables/      the SavedModel (signatures serving_default, serve_bytes)
        model.tflite                    the same model as a TFLite flat buffer (fast runtime)
        metadata.json                   classes, input spec, metrics, ... (see export.py)
        head.npz                        pretrained backbones: the fitted head (trainer.assemble)
        reports/                        evaluation report of the held-out split

A version is written into a hidden temporary folder and renamed into place, so a folder
named by an integer is complete unless someone copied it by hand; :func:`check_version`
verifies that before anything loads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

METADATA_FILE = "metadata.json"
SAVED_MODEL_FILE = "saved_model.pb"
TFLITE_FILE = "model.tflite"
REPORTS_DIR = "reports"
HEAD_FILE = "head.npz"  # pretrained backbones only: the fitted head and OOD model
SCHEMA_VERSION = 1

REQUIRED_METADATA_KEYS: tuple[str, ...] = ("name", "version", "classes", "input")


class ArtifactError(Exception):
    """A model folder that is missing, incomplete or inconsistent."""


def list_versions(models_dir: Path, name: str) -> list[int]:
    """Integer version folders of ``name``, oldest first (hidden temp folders ignored)."""
    model_dir = Path(models_dir) / name
    if not model_dir.is_dir():
        return []
    return sorted(
        int(entry.name)
        for entry in model_dir.iterdir()
        if entry.is_dir() and entry.name.isdigit() and int(entry.name) > 0
    )


def version_dir(models_dir: Path, name: str, version: int) -> Path:
    return Path(models_dir) / name / str(version)


def read_metadata(path: Path) -> dict[str, Any]:
    """Read and sanity-check ``metadata.json`` of a version folder."""
    meta_path = Path(path) / METADATA_FILE
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path} has no {METADATA_FILE}") from exc
    except (OSError, ValueError) as exc:  # ValueError covers bad JSON and bad encodings
        raise ArtifactError(f"{meta_path} is unreadable: {exc}") from exc
    if not isinstance(metadata, dict):
        raise ArtifactError(f"{meta_path} does not hold a JSON object")
    missing = [key for key in REQUIRED_METADATA_KEYS if key not in metadata]
    if missing:
        raise ArtifactError(f"{meta_path} lacks {', '.join(missing)}")
    classes = metadata["classes"]
    if (
        not isinstance(classes, list)
        or len(classes) < 2
        or not all(isinstance(c, str) for c in classes)
    ):
        raise ArtifactError(f"{meta_path}: 'classes' must list at least two names")
    return metadata


def check_version(path: Path) -> dict[str, Any]:
    """Metadata of a complete version folder, or :class:`ArtifactError` saying what is wrong."""
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"{path} is not a folder")
    metadata = read_metadata(path)
    if not (path / SAVED_MODEL_FILE).is_file() and not (path / TFLITE_FILE).is_file():
        raise ArtifactError(f"{path} holds neither {SAVED_MODEL_FILE} nor {TFLITE_FILE}")
    return metadata
