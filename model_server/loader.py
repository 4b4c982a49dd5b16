"""Fetch a bundle from ``file://``, a path or ``http(s)://``, verify it and load the estimator safely.

Order matters: the manifest is read, the model file's sha256 is checked against the manifest and the
pinned digest, and only then is the file deserialized — with skops restricted to an explicit list of
trusted types, and pickle refused unless the operator of the server said to trust it.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import httpx
from pydantic import ValidationError

from model_server.bundle import MANIFEST_NAME, ModelFormat, ModelManifest, normalize_digest, sha256_hex
from model_server.errors import BundleError

# Types skops does not trust by default but which our supported estimators are made of. Anything
# else in a model file is refused unless the user names it with --trust-type.
DEFAULT_TRUSTED_TYPES = frozenset({"sklearn.tree._tree.Tree"})
_HTTP_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_MAX_MODEL_BYTES = 512 * 1024 * 1024


def fetch_bundle(uri: str, cache_dir: Path | None = None) -> Path:
    """Return a local directory holding the bundle at ``uri`` (remote bundles are downloaded)."""
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        path = Path(unquote(parsed.path) if parsed.scheme == "file" else uri)
        if path.name == MANIFEST_NAME:
            path = path.parent
        if not (path / MANIFEST_NAME).is_file():
            raise BundleError(f"no {MANIFEST_NAME} in {path}: pass the bundle directory `modelrollout train` wrote")
        return path
    if parsed.scheme in ("http", "https"):
        target = Path(tempfile.mkdtemp(prefix="bundle-", dir=cache_dir))
        base = uri if uri.endswith("/") else uri + "/"
        try:
            with httpx.Client(timeout=_HTTP_TIMEOUT, follow_redirects=True) as client:
                manifest_bytes = _download(client, base + MANIFEST_NAME)
                manifest = parse_manifest(manifest_bytes, base + MANIFEST_NAME)
                model_bytes = _download(client, base + manifest.model_file)
        except BundleError:
            shutil.rmtree(target, ignore_errors=True)
            raise
        (target / MANIFEST_NAME).write_bytes(manifest_bytes)
        (target / manifest.model_file).write_bytes(model_bytes)
        return target
    raise BundleError(f"unsupported bundle URI scheme {parsed.scheme!r} in {uri!r}: use file://, http:// or https://")


def _download(client: httpx.Client, url: str) -> bytes:
    try:
        response = client.get(url)
    except httpx.HTTPError as exc:
        raise BundleError(f"cannot download {url}: {exc}") from exc
    if response.status_code != 200:
        raise BundleError(f"cannot download {url}: HTTP {response.status_code}")
    if len(response.content) > _MAX_MODEL_BYTES:
        raise BundleError(f"{url} is larger than {_MAX_MODEL_BYTES} bytes")
    return response.content


def parse_manifest(data: bytes, where: str) -> ModelManifest:
    try:
        return ModelManifest.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise BundleError(f"{where} is not a valid model manifest: {field}: {first['msg']}") from exc


def read_verified(bundle_dir: Path, expected_digest: str | None) -> tuple[ModelManifest, bytes]:
    """Read the manifest and the model file; raise BundleError unless the hashes agree."""
    manifest_path = bundle_dir / MANIFEST_NAME
    try:
        manifest = parse_manifest(manifest_path.read_bytes(), str(manifest_path))
        model_bytes = (bundle_dir / manifest.model_file).read_bytes()
    except OSError as exc:
        raise BundleError(f"cannot read bundle in {bundle_dir}: {exc}") from exc
    actual = sha256_hex(model_bytes)
    if actual != manifest.sha256:
        raise BundleError(
            f"{manifest.model_file} hashes to sha256:{actual} but {MANIFEST_NAME} says sha256:{manifest.sha256}; "
            "the bundle is corrupt or was tampered with"
        )
    if expected_digest is not None:
        try:
            pinned = normalize_digest(expected_digest)
        except ValueError as exc:
            raise BundleError(f"--expected-digest: {exc}") from exc
        if actual != pinned:
            raise BundleError(
                f"{manifest.model_file} hashes to sha256:{actual}, not the pinned sha256:{pinned}; refusing to serve it"
            )
    return manifest, model_bytes


def load_estimator(manifest: ModelManifest, model_bytes: bytes, *, trust_pickle: bool, trusted_types: list[str]) -> Any:
    """Deserialize the verified model bytes under the safety rules described in the module docstring."""
    if manifest.format is ModelFormat.JOBLIB:
        if not trust_pickle:
            raise BundleError(
                f"{manifest.model_file} is joblib/pickle, which can execute arbitrary code when loaded; "
                "re-train with `format: skops` or start the server with --trust-pickle if you trust its author"
            )
        import io

        import joblib

        return joblib.load(io.BytesIO(model_bytes))
    import skops.io

    allowed = DEFAULT_TRUSTED_TYPES | set(trusted_types)
    try:
        untrusted = skops.io.get_untrusted_types(data=model_bytes)
        refused = sorted(set(untrusted) - allowed)
        if refused:
            raise BundleError(
                f"{manifest.model_file} contains types that are not trusted: {refused}; "
                "if you trust them, pass --trust-type for each"
            )
        return skops.io.loads(model_bytes, trusted=list(untrusted))
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"cannot load {manifest.model_file} with skops: {exc}") from exc
