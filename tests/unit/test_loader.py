from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from model_server.bundle import ModelManifest, canonical_skops
from model_server.errors import BundleError
from model_server.loader import fetch_bundle, load_estimator, read_verified


def copy_bundle(source: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(source, target)
    return target


def test_verified_bundle_loads_and_predicts(bundles: dict[str, Path], manifests: dict[str, ModelManifest]) -> None:
    manifest, data = read_verified(bundles["iris-v2"], manifests["iris-v2"].digest)
    model = load_estimator(manifest, data, trust_pickle=False, trusted_types=[])
    assert model.predict_proba([[5.1, 3.5, 1.4, 0.2]]).shape == (1, 3)


def test_tampered_model_file_is_refused(bundles: dict[str, Path], tmp_path: Path) -> None:
    bundle = copy_bundle(bundles["iris-v1"], tmp_path)
    with (bundle / "model.skops").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match="corrupt or was tampered with"):
        read_verified(bundle, None)


def test_pinned_digest_must_match(bundles: dict[str, Path], manifests: dict[str, ModelManifest]) -> None:
    with pytest.raises(BundleError, match="not the pinned"):
        read_verified(bundles["iris-v1"], manifests["iris-v2"].digest)
    with pytest.raises(BundleError, match="expected digest"):
        read_verified(bundles["iris-v1"], "sha256:nothex")


def test_pickle_needs_explicit_trust(bundles: dict[str, Path]) -> None:
    manifest, data = read_verified(bundles["iris-v1-joblib"], None)
    with pytest.raises(BundleError, match="--trust-pickle"):
        load_estimator(manifest, data, trust_pickle=False, trusted_types=[])
    assert load_estimator(manifest, data, trust_pickle=True, trusted_types=[]) is not None


def test_untrusted_skops_types_are_named(bundles: dict[str, Path]) -> None:
    import skops.io
    from sklearn.preprocessing import FunctionTransformer

    manifest, _ = read_verified(bundles["iris-v1"], None)
    hostile = canonical_skops(skops.io.dumps(FunctionTransformer(func=shutil.rmtree)))
    with pytest.raises(BundleError, match=r"not trusted: \['shutil.rmtree'\]"):
        load_estimator(manifest, hostile, trust_pickle=False, trusted_types=[])


def test_fetch_refuses_a_directory_without_manifest(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no model\.json"):
        fetch_bundle(f"file://{tmp_path}")
    with pytest.raises(BundleError, match="unsupported bundle URI scheme 's3'"):
        fetch_bundle("s3://bucket/model")
