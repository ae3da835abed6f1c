"""Every knob of the service, read once from ``BONEFRAC_*`` environment variables."""

from __future__ import annotations

import importlib.util
import math
import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from modelio.budget import DEFAULT_MAX_DECODE_BYTES
from modelio.images import DEFAULT_MAX_PIXELS
from modelio.locations import DEFAULT_MODEL_NAME, DEFAULT_MODELS_DIR
from service.records.db import DEFAULT_RECORDS_DIR

#: cgroup v2's CPU quota of this process's group: ``max <period>`` or ``<quota> <period>``.
CGROUP_CPU_MAX = Path("/sys/fs/cgroup/cpu.max")


def _cpu_count() -> int:
    """CPUs the process may use: its affinity, capped by a cgroup CPU quota (a container's
    ``--cpus``, a pod's CPU limit), which the affinity does not show. A pod with only a
    CPU request has no quota: its manifest sets the runner counts itself."""
    count = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    try:
        quota, period = CGROUP_CPU_MAX.read_text().split()[:2]
        if quota != "max":
            count = min(count, math.ceil(int(quota) / int(period)))
    except (OSError, ValueError):  # no cgroup v2 here, or a file we cannot read
        pass
    return max(1, count)


def _default_runtime() -> Literal["openvino", "tflite"]:
    """OpenVINO when it is installed (the service extra installs it), else LiteRT.

    Both run the same ``model.tflite`` with the same answers (1e-4); OpenVINO's CPU
    plugin spends less CPU per image on the shipped model (docs/service.md, "More images
    per second"). Looked up, not imported: the import costs a second and memory.
    """
    return "openvino" if importlib.util.find_spec("openvino") is not None else "tflite"


class Settings(BaseSettings):
    """Service configuration; each field is ``BONEFRAC_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="BONEFRAC_", extra="ignore", frozen=True)

    models_dir: Path = Field(
        DEFAULT_MODELS_DIR,
        description="Folder holding <model_name>/<version>/ as the trainer exports",
    )
    model_name: str = Field(DEFAULT_MODEL_NAME, description="Which model under models_dir to serve")
    model_version: int | None = Field(
        None, ge=1, description="Pin this version; unset serves the newest valid version"
    )
    max_upload_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Largest request body accepted (a batch counts once)"
    )
    max_pixels: int = Field(
        DEFAULT_MAX_PIXELS, ge=1, description="Largest image (width x height) decoded"
    )
    max_decode_bytes: int = Field(
        DEFAULT_MAX_DECODE_BYTES,
        ge=1,
        description="Largest estimated working memory to decode one image: width x height x "
        "the measured bytes per pixel of its mode (1 gray, 4 RGB, 16 alpha or palette, 28 "
        "16-bit); checked from the header, before decoding",
    )
    max_batch_files: int = Field(32, ge=1, description="Most files in one /predict/batch request")
    max_instances: int = Field(
        32, ge=1, description="Most instances in one TF Serving predict request"
    )
    confidence_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="Warn when the top probability is below this"
    )
    colour_threshold: float = Field(
        50.0,
        ge=0.0,
        description="Warn 'not a radiograph' above this colourfulness (Hasler-Suesstrunk; "
        "3 of the 989 real training radiographs exceed 50, vivid photos score 80+)",
    )
    reload_interval_s: float = Field(
        5.0, ge=0.0, description="Seconds between checks for a new version; 0 disables reload"
    )
    api_key: SecretStr | None = Field(
        None,
        description="When set, every route but /healthz and /readyz requires it in the "
        "X-API-Key header",
    )
    runtime: Literal["tflite", "openvino", "saved_model", "auto"] = Field(
        default_factory=_default_runtime,
        description="Which file of a version runs, and on what: model.tflite on OpenVINO "
        "(the default when installed), model.tflite on LiteRT (the default otherwise), the "
        "SavedModel (imports TensorFlow), or auto (model.tflite on LiteRT, else the "
        "SavedModel). No TensorFlow unless saved_model or auto is chosen",
    )
    inference_precision: Literal["f32", "bf16"] = Field(
        "f32",
        description="Arithmetic of the OpenVINO runtime: bf16 serves about 1.7x the requests "
        "per second of f32 on CPUs with AMX or AVX-512 BF16 and changes answers slightly "
        "(docs/service.md); a CPU without it runs f32. The other runtimes run f32 only",
    )
    header_timeout_s: float = Field(
        10.0,
        gt=0.0,
        description="Seconds a client has to send a request's line and headers; "
        "then the connection is closed",
    )
    body_timeout_s: float = Field(
        30.0,
        gt=0.0,
        description="Seconds the body of a request may pause between two reads; "
        "then it is answered 408 and closed",
    )
    body_deadline_s: float = Field(
        120.0,
        gt=0.0,
        description="Seconds the whole body of a request may take to arrive, however "
        "steadily it trickles in; then it is answered 408 and closed",
    )
    memory_trim_interval_s: float = Field(
        5.0,
        ge=0.0,
        description="Seconds between hand-backs of freed memory to the operating system "
        "(glibc's malloc_trim) while requests come in; 0 disables",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="Allowed CORS origins, comma separated; empty: no CORS"
    )
    interpreters: int = Field(
        default_factory=_cpu_count,
        ge=1,
        description="Inferences running at once under load (TFLite interpreters, OpenVINO "
        "streams), each on inference_threads threads; default: one per CPU",
    )
    inference_threads: int = Field(1, ge=1, description="CPU threads of each of those")
    solo_threads: int = Field(
        default_factory=_cpu_count,
        ge=0,
        description="Threads of one more interpreter, used by a request that finds no other "
        "inference running, so a lone request runs on every core; default: the CPU count; "
        "0: none. The CPU count is the affinity capped by a container's CPU limit; a "
        "container with no limit sees the machine's, so set these three to its share",
    )
    host: str = Field("127.0.0.1", description="Default address for python -m service")
    port: int = Field(8000, ge=0, le=65535, description="Default port for python -m service")
    replica_id: str = Field(
        default_factory=socket.gethostname,
        min_length=1,
        max_length=253,
        pattern=r"^[\x21-\x7e]+$",
        description="Name this process gives in the X-Bonefrac-Replica header of every "
        "answer, so clients and tests can see which replica served them; default: the "
        "hostname (a container's or pod's name)",
    )
    records_dir: Path = Field(
        DEFAULT_RECORDS_DIR,
        description="Folder of the SQLite records database (the prediction log and "
        "reviews) when no database_url is set",
    )
    database_url: SecretStr | None = Field(
        None,
        description="The records database instead of SQLite, e.g. "
        "postgresql://user:password@host/bonefrac (psycopg 3)",
    )
    prediction_log: bool = Field(
        True, description="Record every /predict and /predict/batch answer (no patient data)"
    )
    store_images: bool = Field(
        False,
        description="Keep each uploaded image in the records database, once per SHA-256 "
        "(needed to retrain from reviews)",
    )
    image_retention_days: int = Field(
        30, ge=1, description="Stored images not sent again for this many days are purged"
    )
    store_filenames: bool = Field(
        False, description="Record uploads' file names (they often name the patient: off)"
    )
    log_queue_size: int = Field(
        10_000,
        ge=1,
        description="Answers waiting to be written; past it (or 256 MiB of queued uploads) "
        "answers go unrecorded and are counted, never delayed",
    )
    reviewer_key: SecretStr | None = Field(
        None,
        description="When set, /feedback and /predictions also require it in the "
        "X-Reviewer-Key header (the reading page has it; other API clients need not)",
    )
    log_level: str = Field("info", description="uvicorn and service log level")
    access_log: bool = Field(False, description="Log every request (metrics count them anyway)")

    @model_validator(mode="after")
    def _precision_needs_openvino(self) -> Settings:
        """bf16 asked of a runtime that only runs float32 is a mistake to say, not ignore."""
        if self.inference_precision != "f32" and self.runtime != "openvino":
            raise ValueError(
                f"BONEFRAC_INFERENCE_PRECISION={self.inference_precision} needs the "
                f"openvino runtime (the {self.runtime} runtime runs f32 only): install "
                "OpenVINO (the service extra does) and leave BONEFRAC_RUNTIME unset or "
                "set it to openvino"
            )
        return self

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        """Accept ``a,b`` from the environment as well as a list in code."""
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("api_key", "database_url", "reviewer_key", mode="before")
    @classmethod
    def _empty_key_is_none(cls, value: object) -> object:
        """``BONEFRAC_API_KEY=`` (empty) means no key, not an empty key."""
        return None if value == "" else value
