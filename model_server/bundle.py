"""The model bundle: a directory with the serialized model and its ``model.json`` manifest.

The manifest is the contract between training, the server and the operator: it names the model and
version, pins the model file by sha256, records the feature schema the server validates requests
against, the training metrics, and reference histograms the server compares live inputs with (drift).

Model files are written reproducibly: the same estimator always serializes to the same bytes, so the
same training config and seed give the same digest and the operator can pin it.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_NAME = "model.json"
MANIFEST_SCHEMA_VERSION = 1
_FIXED_ZIP_TIME = (1980, 1, 1, 0, 0, 0)


class ModelFormat(StrEnum):
    """How the model file is serialized."""

    SKOPS = "skops"
    """Safe by construction: only an explicit list of trusted types is ever instantiated."""
    JOBLIB = "joblib"
    """Pickle underneath: executes code on load, so the server refuses it unless told to trust it."""


MODEL_FILE_NAMES = {ModelFormat.SKOPS: "model.skops", ModelFormat.JOBLIB: "model.joblib"}


class FeatureSpec(BaseModel):
    """One input feature as the model saw it during training."""

    model_config = ConfigDict(frozen=True)

    name: str = Field(pattern=r"^[a-z_][a-z0-9_]*$")
    source_name: str
    dtype: str = "float64"
    min: float
    max: float


class Histogram(BaseModel):
    """A reference distribution: ``len(edges) + 1`` bins, the outer two open-ended."""

    model_config = ConfigDict(frozen=True)

    edges: list[float]
    fractions: list[float]


class ReferenceDistributions(BaseModel):
    """Training-time distributions that live traffic is compared against."""

    features: dict[str, Histogram]
    predictions: dict[str, float]


class FrameworkVersions(BaseModel):
    python: str
    sklearn: str
    numpy: str
    skops: str | None = None


class ModelManifest(BaseModel):
    """The content of ``model.json``."""

    model_config = ConfigDict(protected_namespaces=())

    schema_version: int = MANIFEST_SCHEMA_VERSION
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    version: str = Field(min_length=1, max_length=63)
    format: ModelFormat
    model_file: str
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    task: str = "classification"
    features: list[FeatureSpec] = Field(min_length=1)
    classes: list[str] = Field(min_length=1)
    metrics: dict[str, float]
    reference: ReferenceDistributions
    framework: FrameworkVersions
    training: dict[str, Any]
    git_commit: str | None = None
    created_at: str

    @property
    def digest(self) -> str:
        """The pinned form of the model file's hash, as the operator writes it."""
        return f"sha256:{self.sha256}"

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def normalize_digest(digest: str) -> str:
    """Accept ``sha256:<hex>`` or bare ``<hex>``; return the bare lower-case hex or raise ValueError."""
    value = digest.strip().lower().removeprefix("sha256:")
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise ValueError(f"expected digest 'sha256:<64 hex chars>', got {digest!r}")
    return value


def canonical_skops(data: bytes) -> bytes:
    """Rewrite a skops archive so identical estimators give identical bytes.

    skops names array files and memo ids after ``id()`` of the objects and stamps the current time
    into the zip; both are renumbered here in traversal order and the time is fixed. The mapping is
    a bijection, so shared references inside the model survive.
    """
    source = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(source.read("schema.json"))
    ids: dict[int, int] = {}
    files: dict[str, str] = {}

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out: dict[str, Any] = {}
            for key, value in node.items():
                if key == "__id__" and isinstance(value, int):
                    out[key] = ids.setdefault(value, len(ids) + 1)
                elif key == "file" and isinstance(value, str) and value in source.namelist():
                    out[key] = files.setdefault(value, f"{len(files):04d}{Path(value).suffix}")
                else:
                    out[key] = walk(value)
            return out
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    canonical_schema = walk(schema)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as target:
        for old_name, new_name in sorted(files.items(), key=lambda item: item[1]):
            _write_entry(target, new_name, source.read(old_name))
        _write_entry(target, "schema.json", json.dumps(canonical_schema, indent=1, sort_keys=False).encode())
    return buffer.getvalue()


def _write_entry(archive: zipfile.ZipFile, name: str, payload: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_FIXED_ZIP_TIME)
    info.external_attr = 0o644 << 16
    archive.writestr(info, payload)


def write_bundle(directory: Path, manifest: ModelManifest, model_bytes: bytes) -> Path:
    """Write the model file and the manifest; return the manifest path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / manifest.model_file).write_bytes(model_bytes)
    manifest_path = directory / MANIFEST_NAME
    manifest_path.write_text(manifest.model_dump_json(indent=2) + "\n")
    return manifest_path
