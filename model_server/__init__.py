"""The modelrollout model server and the model bundle format.

A *bundle* is a directory holding one trained scikit-learn model (skops by default) and a ``model.json``
manifest. The server loads a bundle, verifies its digest and serves it over HTTP with Prometheus metrics.
"""

__all__: list[str] = []
