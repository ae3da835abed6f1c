"""Where the models live and which one is meant: the defaults, spelled once.

``BONEFRAC_MODELS_DIR`` and ``BONEFRAC_MODEL_NAME`` mean the same to every process: the
trainer writes versions to ``<models_dir>/<model_name>/<N>/`` and the service serves the
newest of them. Each process reads them once, at start, into one object (the trainer's
command line builds a :class:`ModelPlace` in ``main``; the service's ``Settings`` reads
the same variables with these defaults), never at import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

DEFAULT_MODELS_DIR: Final = Path("models")
DEFAULT_MODEL_NAME: Final = "bone-fracture"
MODELS_DIR_VARIABLE: Final = "BONEFRAC_MODELS_DIR"
MODEL_NAME_VARIABLE: Final = "BONEFRAC_MODEL_NAME"


@dataclass(frozen=True)
class ModelPlace:
    """The models folder and the model name a process works with."""

    models_dir: Path = DEFAULT_MODELS_DIR
    model_name: str = DEFAULT_MODEL_NAME
    #: BONEFRAC_MODEL_NAME was set: it then wins over a shipped model's own name too
    name_from_environment: bool = False

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> ModelPlace:
        """Read the two variables (blank counts as unset) from ``environ`` or the process."""
        env = os.environ if environ is None else environ
        folder = env.get(MODELS_DIR_VARIABLE, "").strip()
        name = env.get(MODEL_NAME_VARIABLE, "").strip()
        return cls(
            models_dir=Path(folder) if folder else DEFAULT_MODELS_DIR,
            model_name=name or DEFAULT_MODEL_NAME,
            name_from_environment=bool(name),
        )
