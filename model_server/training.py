"""Train a scikit-learn Pipeline from a YAML config and write it as a model bundle.

This is the "notebook to production" step: everything that decides the model is in the config
(dataset, split, preprocessing, estimator and hyper-parameters, seed), so a bundle can be rebuilt
bit-for-bit from its config — the same config and seed always give the same model digest.
"""

from __future__ import annotations

import datetime as dt
import io
import platform
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import joblib
import numpy as np
import sklearn
import yaml
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sklearn import datasets
from sklearn.base import ClassifierMixin
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import StratifiedKFold, cross_val_score, train_test_split
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeClassifier

from model_server.bundle import (
    MODEL_FILE_NAMES,
    FeatureSpec,
    FrameworkVersions,
    Histogram,
    ModelFormat,
    ModelManifest,
    ReferenceDistributions,
    canonical_skops,
    sha256_hex,
    write_bundle,
)

DatasetName = Literal["iris", "wine", "breast_cancer"]
EstimatorName = Literal["logistic_regression", "random_forest", "gradient_boosting", "decision_tree", "dummy"]

_LOADERS: dict[str, Callable[..., Any]] = {
    "iris": datasets.load_iris,
    "wine": datasets.load_wine,
    "breast_cancer": datasets.load_breast_cancer,
}
_ESTIMATORS: dict[str, type[ClassifierMixin]] = {
    "logistic_regression": LogisticRegression,
    "random_forest": RandomForestClassifier,
    "gradient_boosting": GradientBoostingClassifier,
    "decision_tree": DecisionTreeClassifier,
    "dummy": DummyClassifier,
}
REFERENCE_BINS = 10


class DatasetConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: DatasetName
    test_size: float = Field(default=0.25, gt=0, lt=1)


class EstimatorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: EstimatorName
    params: dict[str, Any] = Field(default_factory=dict)


class TrainConfig(BaseModel):
    """A training run, as written in a YAML config file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    version: str = Field(pattern=r"^[0-9A-Za-z][0-9A-Za-z.+_-]{0,62}$")
    seed: int = 42
    dataset: DatasetConfig
    estimator: EstimatorConfig
    scale: bool = True
    cv_folds: int = Field(default=5, ge=2, le=20)
    format: ModelFormat = ModelFormat.SKOPS


class TrainingError(Exception):
    """A config that cannot be trained; the message says what to fix."""


def load_config(path: Path) -> TrainConfig:
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise TrainingError(f"cannot read config {path}: {exc}") from exc
    try:
        return TrainConfig.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        )
        raise TrainingError(f"invalid config {path}: {problems}") from exc


def feature_name(source_name: str) -> str:
    """``'sepal length (cm)'`` → ``'sepal_length_cm'``: a name that is a JSON key and a Python identifier."""
    name = re.sub(r"[^a-z0-9]+", "_", source_name.lower()).strip("_")
    return name if re.match(r"^[a-z_]", name) else f"f_{name}"


def build_pipeline(config: TrainConfig) -> Pipeline:
    estimator_cls = _ESTIMATORS[config.estimator.type]
    allowed = set(estimator_cls().get_params())
    unknown = sorted(set(config.estimator.params) - allowed)
    if unknown:
        raise TrainingError(
            f"estimator.params: {estimator_cls.__name__} has no parameter(s) {unknown}; "
            f"valid ones are {sorted(allowed)}"
        )
    params = dict(config.estimator.params)
    if "random_state" in allowed:
        params.setdefault("random_state", config.seed)
    steps: list[tuple[str, Any]] = []
    if config.scale:
        steps.append(("scale", StandardScaler()))
    steps.append(("model", estimator_cls(**params)))
    return Pipeline(steps)


def reference_histogram(values: NDArray[np.float64], bins: int = REFERENCE_BINS) -> Histogram:
    """Quantile edges (so every reference bin holds data) and the training fraction in each bin."""
    quantiles = np.quantile(values, np.linspace(0, 1, bins + 1)[1:-1])
    edges = np.unique(quantiles)
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return Histogram(
        edges=[round(float(e), 12) for e in edges],
        fractions=[round(float(c) / len(values), 12) for c in counts],
    )


def serialize(model: Pipeline, model_format: ModelFormat) -> bytes:
    if model_format is ModelFormat.SKOPS:
        import skops.io

        return canonical_skops(skops.io.dumps(model))
    buffer = io.BytesIO()
    joblib.dump(model, buffer)
    return buffer.getvalue()


def _git_commit() -> str | None:
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def train(config: TrainConfig, out_dir: Path, *, now: dt.datetime | None = None) -> ModelManifest:
    """Fit, cross-validate, evaluate and write the bundle to ``out_dir``."""
    data = _LOADERS[config.dataset.name]()
    x_all = np.asarray(data.data, dtype=np.float64)
    y_all = np.asarray(data.target)
    class_names = [str(c) for c in data.target_names]
    x_train, x_test, y_train, y_test = train_test_split(
        x_all, y_all, test_size=config.dataset.test_size, random_state=config.seed, stratify=y_all
    )
    pipeline = build_pipeline(config)
    folds = StratifiedKFold(n_splits=config.cv_folds, shuffle=True, random_state=config.seed)
    cv_scores = cross_val_score(pipeline, x_train, y_train, cv=folds, scoring="accuracy")
    pipeline.fit(x_train, y_train)
    predicted = pipeline.predict(x_test)
    metrics = {
        "cv_accuracy_mean": round(float(cv_scores.mean()), 6),
        "cv_accuracy_std": round(float(cv_scores.std()), 6),
        "test_accuracy": round(float(accuracy_score(y_test, predicted)), 6),
        "test_f1_macro": round(float(f1_score(y_test, predicted, average="macro", zero_division=0)), 6),
    }
    features = [
        FeatureSpec(
            name=feature_name(source),
            source_name=source,
            min=float(x_train[:, i].min()),
            max=float(x_train[:, i].max()),
        )
        for i, source in enumerate(data.feature_names)
    ]
    predicted_counts = np.bincount(predicted, minlength=len(class_names))
    reference = ReferenceDistributions(
        features={f.name: reference_histogram(x_train[:, i]) for i, f in enumerate(features)},
        predictions={
            name: round(float(count) / len(predicted), 12)
            for name, count in zip(class_names, predicted_counts, strict=True)
        },
    )
    model_bytes = serialize(pipeline, config.format)
    manifest = ModelManifest(
        name=config.name,
        version=config.version,
        format=config.format,
        model_file=MODEL_FILE_NAMES[config.format],
        sha256=sha256_hex(model_bytes),
        features=features,
        classes=class_names,
        metrics=metrics,
        reference=reference,
        framework=FrameworkVersions(
            python=platform.python_version(),
            sklearn=sklearn.__version__,
            numpy=np.__version__,
            skops=_skops_version() if config.format is ModelFormat.SKOPS else None,
        ),
        training={
            "config": config.model_dump(mode="json"),
            "n_train": len(x_train),
            "n_test": len(x_test),
        },
        git_commit=_git_commit(),
        created_at=(now or dt.datetime.now(dt.UTC)).isoformat(timespec="seconds"),
    )
    write_bundle(out_dir, manifest, model_bytes)
    return manifest


def _skops_version() -> str:
    from importlib.metadata import version

    return version("skops")
