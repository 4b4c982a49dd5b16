"""Runs KServe's own REST client (``kserve.InferenceRESTClient``, protocol v2) for the tests, in its venv.

Started by ``tests.support.kserve.client.KServeWorker`` with ``.venv-kserve/bin/python``; imports only
kserve and numpy (nothing of the project). One JSON object per line on stdin, one answer per line on stdout:

    {"op": "live" | "ready" | "model_ready", "url": ..., "model": ...}
    {"op": "infer", "url": ..., "model": ..., "id": ..., "parameters": {...} | null,
     "inputs": [{"name", "shape", "datatype", "data": [flat values], "binary": bool}],
     "outputs": [{"name", "binary": bool | null}] | null}
    → {"ok": true, "result": ...} | {"ok": false, "status": int | null, "error": str}

An infer result is what the client decoded, ``{"id", "model_name", "outputs": {name: {"shape", "datatype",
"data"}}, "headers": {...}}`` (the client drops ``binary_data_size`` once it has decoded an output; the
response headers say whether binary data came).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

import httpx
import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput
from kserve.utils.numpy_codec import to_np_dtype


def _request(message: dict[str, Any]) -> InferRequest:
    inputs = []
    for spec in message["inputs"]:
        tensor = InferInput(spec["name"], spec["shape"], spec["datatype"])
        array = np.array(spec["data"], dtype=to_np_dtype(spec["datatype"])).reshape(spec["shape"])
        tensor.set_data_from_numpy(array, binary_data=spec["binary"])
        inputs.append(tensor)
    outputs = None
    if message.get("outputs") is not None:
        outputs = [
            RequestedOutput(o["name"], None if o.get("binary") is None else {"binary_data": o["binary"]})
            for o in message["outputs"]
        ]
    return InferRequest(
        model_name=message["model"],
        infer_inputs=inputs,
        request_id=message.get("id"),
        parameters=message.get("parameters"),
        request_outputs=outputs,
    )


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


async def _run(message: dict[str, Any]) -> Any:
    async with InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30)) as client:
        url, op = message["url"], message["op"]
        if op == "live":
            return await client.is_server_live(url)
        if op == "ready":
            return await client.is_server_ready(url)
        if op == "model_ready":
            return await client.is_model_ready(url, message["model"])
        if op != "infer":
            raise ValueError(f"unknown op {op!r}")
        headers: dict[str, str] = {}
        response = await client.infer(url, _request(message), model_name=message["model"], response_headers=headers)
        outputs = {
            output.name: {
                "shape": list(output.shape),
                "datatype": output.datatype,
                "data": [_plain(v) for v in output.as_numpy().ravel().tolist()],
            }
            for output in response.outputs
        }
        return {"id": response.id, "model_name": response.model_name, "outputs": outputs, "headers": headers}


def main() -> None:
    for line in sys.stdin:
        message = json.loads(line)
        try:
            answer: dict[str, Any] = {"ok": True, "result": asyncio.run(_run(message))}
        except httpx.HTTPStatusError as exc:
            answer = {"ok": False, "status": exc.response.status_code, "error": str(exc)}
        except Exception as exc:  # reported to the test, which decides
            answer = {"ok": False, "status": None, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
