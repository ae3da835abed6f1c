"""The model manager: which version is served, and swapping to a newer one safely.

The served model is one immutable :class:`LoadedModel`. A request takes a reference to
it once and uses only that, so replacing ``registry.current`` (a single attribute
assignment, atomic in Python) never disturbs a request already running on the old one;
the old interpreter is freed when its last request lets go of it.

A version is served only after it passed :func:`modelio.artifact.check_version` and
its integrity record (:func:`modelio.integrity.verify_integrity`), its runtime loaded,
and a warm-up inference returned a probability distribution of the right length. A
version that fails is refused with one log line and remembered by its files'
fingerprint, so it is not retried every poll but is retried once its files change (for
example when a hand copy completes).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

from modelio.artifact import ArtifactError, check_version, list_versions, version_dir
from modelio.contract import FRACTURE_PROBABILITY, FractureRules, output_names
from modelio.images import InputSpec
from modelio.integrity import verify_integrity
from service.runtime import Predictor, load_predictor, warm_up
from service.settings import Settings

log = logging.getLogger("service.registry")

Fingerprint = tuple[tuple[str, int, int], ...]


@dataclass(frozen=True)
class LoadedModel:
    """One version, loaded and warmed: everything a request needs, never mutated."""

    name: str
    version: int
    path: Path
    metadata: dict[str, Any]
    classes: tuple[str, ...]
    spec: InputSpec
    predictor: Predictor
    loaded_at: dt.datetime
    load_seconds: float
    #: metadata.json's fracture rules, read once at load (None: no fracture block).
    fracture_rules: FractureRules | None

    @property
    def trained_on(self) -> str | None:
        """metadata.json's one sentence on the training data (older versions lack it)."""
        value = self.metadata.get("trained_on")
        return value if isinstance(value, str) else None


@dataclass
class Refusal:
    """Why a version is not served, kept until its files change."""

    reason: str
    fingerprint: Fingerprint
    at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


def fingerprint(path: Path) -> Fingerprint:
    """Names, sizes and mtimes of a version's files: changes when anyone rewrites it."""
    entries = []
    try:
        for item in sorted(path.rglob("*")):
            if item.is_file():
                stat = item.stat()
                entries.append((str(item.relative_to(path)), stat.st_size, stat.st_mtime_ns))
    except OSError:
        return ()
    return tuple(entries)


def _is_absolute_path(text: str) -> bool:
    return PurePosixPath(text).is_absolute() or bool(PureWindowsPath(text).drive)


def public_metadata(value: Any) -> Any:
    """``value`` with every string that is an absolute path cut to its base name.

    metadata.json records where the training data lay (``dataset.source``) on the
    machine that trained; the serving machine's answers name no absolute path.
    """
    if isinstance(value, dict):
        return {key: public_metadata(item) for key, item in value.items()}
    if isinstance(value, list):
        return [public_metadata(item) for item in value]
    if isinstance(value, str) and _is_absolute_path(value):
        return PurePosixPath(value.replace("\\", "/")).name
    return value


def read_fracture_rules(metadata: dict[str, Any], name: str, version: int) -> FractureRules | None:
    """A version's fracture rules, read once when it loads rather than per request.

    A version that declares a fracture output but whose rules are missing or unreadable
    is still served (its type answers are sound), but every answer then lacks the
    fracture block; that is logged here as a warning, so it is not silent.
    """
    rules = FractureRules.from_metadata(metadata)
    if rules is None and FRACTURE_PROBABILITY in output_names(metadata):
        log.warning(
            "version %s of %s has a %s output but metadata.json's 'fracture' rules are "
            "missing or unreadable; its answers will carry no fracture block",
            version,
            name,
            FRACTURE_PROBABILITY,
        )
    return rules


class NoModelError(Exception):
    """Nothing is being served yet; the message says how to get a model."""


class ModelRegistry:
    """Finds, loads, warms and swaps versions of one model; thread-safe."""

    def __init__(
        self, settings: Settings, on_load: Callable[[str, int], None] | None = None
    ) -> None:
        """``on_load(outcome, version)`` hears of every attempt: 'loaded' or 'refused'."""
        self.settings = settings
        self.models_dir = Path(settings.models_dir)
        self.name = settings.model_name
        self.pinned = settings.model_version
        self.current: LoadedModel | None = None
        self.refused: dict[int, Refusal] = {}
        self._on_load = on_load or (lambda _outcome, _version: None)
        self._lock = threading.Lock()  # one refresh at a time; readers never take it
        # What answers call the models folder: its own name, never the absolute path.
        self.public_dir = self.models_dir.name or "models"
        self._private_prefixes = sorted(
            {str(p) for p in (self.models_dir, self.models_dir.resolve()) if p.is_absolute()},
            key=len,
            reverse=True,
        )

    def public(self, text: str) -> str:
        """``text`` with the models folder's absolute path replaced by its name."""
        for prefix in self._private_prefixes:
            text = text.replace(prefix, self.public_dir)
        return text

    def public_path(self, path: Path) -> str:
        """A version folder as answers show it: relative to the models folder's name."""
        try:
            return str(Path(self.public_dir) / Path(path).relative_to(self.models_dir))
        except ValueError:
            return Path(path).name

    def get(self) -> LoadedModel:
        """The served model, or :class:`NoModelError` explaining how to get one."""
        model = self.current
        if model is None:
            raise NoModelError(self.missing_message())
        return model

    def missing_message(self) -> str:
        """Why nothing is served and how to fix it; names the folder, not its absolute path."""
        where = Path(self.public_dir) / self.name
        if self.pinned is not None:
            what = f"version {self.pinned} of model '{self.name}' is not loadable from {where}"
        elif not list_versions(self.models_dir, self.name):
            what = f"no version of model '{self.name}' in {where}"
        else:
            what = f"no valid version of model '{self.name}' in {where}"
        refused = "; ".join(f"v{v}: {r.reason}" for v, r in sorted(self.refused.items()))
        return (
            f"Model not loaded: {what}{f' (refused {refused})' if refused else ''}. "
            "Put the shipped model there with "
            f"`python -m trainer assemble --models {self.public_dir}` (or train one on your "
            "own radiographs: `python -m trainer train --data DIR --recipe best`), or point "
            "BONEFRAC_MODELS_DIR at a folder that holds <name>/<N>/."
        )

    def versions_on_disk(self) -> list[int]:
        return list_versions(self.models_dir, self.name)

    def candidates(self, on_disk: list[int]) -> list[int]:
        """Versions to consider, best first: the pinned one, or newest to oldest."""
        if self.pinned is not None:
            return [self.pinned] if self.pinned in on_disk else []
        return sorted(on_disk, reverse=True)

    def refresh(self) -> LoadedModel | None:
        """Serve the best loadable version; return the newly loaded model, if any.

        Called at start-up and by the reload poll. Blocking (loads files, runs the
        model): call it from a worker thread, never on the event loop.
        """
        with self._lock:
            on_disk = self.versions_on_disk()
            if any(version not in on_disk for version in self.refused):
                # a refused version deleted from disk is forgotten (no stale reasons)
                self.refused = {v: r for v, r in self.refused.items() if v in on_disk}
            for version in self.candidates(on_disk):
                current = self.current
                if current is not None and current.version == version:
                    return None  # already serving the best candidate
                path = version_dir(self.models_dir, self.name, version)
                prints = fingerprint(path)
                refusal = self.refused.get(version)
                if refusal is not None and refusal.fingerprint == prints:
                    continue
                try:
                    loaded = self._load(version, path)
                except Exception as exc:  # any broken version is refused, never fatal
                    # copy-on-write: request threads read `refused` without the lock
                    reason = self.public(str(exc))
                    self.refused = {**self.refused, version: Refusal(reason, prints)}
                    self._on_load("refused", version)
                    log.error(
                        "refusing version %s of %s: %s%s",
                        version,
                        self.name,
                        exc,
                        f" (still serving version {current.version})" if current else "",
                    )
                    continue
                self.refused = {v: r for v, r in self.refused.items() if v != version}
                self.current = loaded
                self._on_load("loaded", version)
                log.info(
                    "serving version %s of %s (%s, loaded in %.2fs)%s",
                    version,
                    self.name,
                    loaded.predictor.runtime,
                    loaded.load_seconds,
                    f", replacing version {current.version}" if current else "",
                )
                return loaded
            current = self.current
            if current is not None and current.version not in on_disk:
                self._unload(current)
            return None

    def _unload(self, gone: LoadedModel) -> None:
        """Stop serving a version whose folder was deleted, as TF Serving does.

        Reached only when no version on disk could replace it: the operator removed
        what was served, and answering from a copy that exists only in memory (that
        /models cannot show) would hide that. Requests already running finish on it.
        """
        self.current = None
        log.warning(
            "version %s of %s was removed from disk and no other version is loadable; "
            "serving nothing until one appears",
            gone.version,
            self.name,
        )

    def _predictor(self, version: int, path: Path) -> Predictor:
        """The settings' runtime for ``path``. OpenVINO by default only: a version it
        cannot load (a broken install, an operator its TFLite reader lacks) runs on LiteRT
        with a warning, since LiteRT reads every file the trainer writes. A runtime or a
        bf16 precision chosen in the settings is kept, and its failure refuses the version.
        """
        settings = self.settings
        load = partial(
            load_predictor,
            path,
            interpreters=settings.interpreters,
            threads=settings.inference_threads,
            solo_threads=settings.solo_threads,
        )
        try:
            return load(runtime=settings.runtime, precision=settings.inference_precision)
        except ArtifactError as exc:
            chosen = {"runtime", "inference_precision"} & settings.model_fields_set
            if settings.runtime != "openvino" or chosen:
                raise
            log.warning(
                "version %d of %s: OpenVINO cannot run it (%s); running it on LiteRT instead "
                "(set BONEFRAC_RUNTIME to choose)",
                version,
                self.name,
                self.public(str(exc)),
            )
            return load(runtime="tflite", precision="f32")

    def _load(self, version: int, path: Path) -> LoadedModel:
        start = time.perf_counter()
        metadata = check_version(path)
        if not verify_integrity(path, metadata):
            log.info(
                "version %s of %s has no integrity record (exported before records "
                "existed); re-export it to have its files checked",
                version,
                self.name,
            )
        if metadata.get("name") not in (None, self.name):
            raise ArtifactError(
                f"metadata.json names model '{metadata['name']}', not '{self.name}'"
            )
        try:
            spec = InputSpec.from_dict(metadata["input"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"metadata.json 'input' is invalid: {exc}") from exc
        classes = tuple(metadata["classes"])
        predictor = self._predictor(version, path)
        warm_up(predictor, spec, len(classes))
        fracture_rules = read_fracture_rules(metadata, self.name, version)
        return LoadedModel(
            name=self.name,
            version=version,
            path=path,
            metadata=metadata,
            classes=classes,
            spec=spec,
            predictor=predictor,
            loaded_at=dt.datetime.now(dt.UTC),
            load_seconds=time.perf_counter() - start,
            fracture_rules=fracture_rules,
        )
