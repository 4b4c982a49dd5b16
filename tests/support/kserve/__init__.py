"""KServe's Python client, run from its own virtualenv (``venv.py``) through a worker process (``worker.py``)."""
