"""The KServe client's own virtualenv: ``python -m tests.support.kserve.venv [DIR]`` (``make install`` runs it).

kserve 0.21 pins ``protobuf<7`` (and psutil, pandas, grpcio-tools…); installed into the project's venv it
would downgrade the protobuf that onnx/onnxruntime — the server's engine — run on. So it lives in
``.venv-kserve`` beside ``.venv``, built from ``requirements.txt`` with the project venv's Python and uv,
and rebuilt only when that file changes (its content is stamped into the venv). Nothing of the project is
installed there: the tests talk to it through ``worker.py`` over stdin/stdout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]
REQUIREMENTS = HERE / "requirements.txt"
DEFAULT = Path(os.environ.get("MODELROLLOUT_KSERVE_VENV", REPO / ".venv-kserve"))
STAMP = "modelrollout-requirements.txt"


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def ensure(venv: Path = DEFAULT) -> Path:
    """The venv's Python, after (re)building the venv if it is missing or its requirements changed."""
    wanted = REQUIREMENTS.read_text()
    stamp = venv / STAMP
    if python_of(venv).exists() and stamp.exists() and stamp.read_text() == wanted:
        return python_of(venv)
    print(f"building {venv} from {REQUIREMENTS.relative_to(REPO)} ...", file=sys.stderr, flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    uv = Path(sys.executable).with_name("uv")
    if uv.exists():
        subprocess.run([uv, "venv", "--quiet", "--python", sys.executable, venv], check=True)
        install = [uv, "pip", "install", "--quiet", "--python", python_of(venv), "-r", REQUIREMENTS]
    else:
        subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        install = [python_of(venv), "-m", "pip", "install", "--quiet", "-r", REQUIREMENTS]
    subprocess.run(install, check=True)
    subprocess.run([python_of(venv), "-c", "import kserve"], check=True)  # imports, or the build failed
    stamp.write_text(wanted)
    return python_of(venv)


if __name__ == "__main__":
    print(ensure(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))
