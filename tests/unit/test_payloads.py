from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from model_server.bundle import ModelManifest
from model_server.errors import BadRequest, InvalidInput, ServerError
from model_server.payloads import PredictSchema

ROW = {"sepal_length_cm": 5.1, "sepal_width_cm": 3.5, "petal_length_cm": 1.4, "petal_width_cm": 0.2}


@pytest.fixture(scope="module")
def schema(manifests: dict[str, ModelManifest]) -> PredictSchema:
    return PredictSchema(manifests["iris-v1"], max_batch_rows=5)


def test_row_and_batch(schema: PredictSchema) -> None:
    rows, is_batch = schema.parse(json.dumps(ROW).encode())
    assert rows.tolist() == [[5.1, 3.5, 1.4, 0.2]] and not is_batch
    reordered = dict(reversed(ROW.items()))
    rows, is_batch = schema.parse(json.dumps({"instances": [ROW, reordered]}).encode())
    assert rows.tolist() == [[5.1, 3.5, 1.4, 0.2]] * 2 and is_batch


@pytest.mark.parametrize(
    ("body", "error", "field"),
    [
        (b"", BadRequest, None),
        (b"{nope", BadRequest, None),
        (b"[1, 2]", BadRequest, None),
        (b"null", BadRequest, None),
        (json.dumps({**ROW, "sepal_length_cm": "5.1"}).encode(), InvalidInput, "sepal_length_cm"),
        (json.dumps({**ROW, "sepal_length_cm": True}).encode(), InvalidInput, "sepal_length_cm"),
        (json.dumps({**ROW, "petal_width_cm": None}).encode(), InvalidInput, "petal_width_cm"),
        (b'{"sepal_length_cm": NaN, "sepal_width_cm": 1, "petal_length_cm": 1, "petal_width_cm": 1}', InvalidInput,
         "sepal_length_cm"),
        (b'{"sepal_length_cm": 1e999, "sepal_width_cm": 1, "petal_length_cm": 1, "petal_width_cm": 1}', InvalidInput,
         "sepal_length_cm"),
        (json.dumps({k: v for k, v in ROW.items() if k != "petal_width_cm"}).encode(), InvalidInput, "petal_width_cm"),
        (json.dumps({**ROW, "colour": 1}).encode(), InvalidInput, "colour"),
        (json.dumps({"instances": []}).encode(), InvalidInput, "instances"),
        (json.dumps({"instances": [ROW] * 6}).encode(), InvalidInput, "instances"),
        (json.dumps({"instances": [ROW, {**ROW, "sepal_width_cm": "x"}]}).encode(), InvalidInput,
         "instances[1].sepal_width_cm"),
        (json.dumps({"instances": [ROW], "extra": 1}).encode(), InvalidInput, "extra"),
        (json.dumps({"instances": 3}).encode(), InvalidInput, "instances"),
    ],
)  # fmt: skip
def test_bad_input_names_the_field(
    schema: PredictSchema, body: bytes, error: type[ServerError], field: str | None
) -> None:
    with pytest.raises(error) as raised:
        schema.parse(body)
    if field is not None:
        assert field in [p.field for p in raised.value.problems]
        assert field in raised.value.message


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=16), children, max_size=5),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values | st.fixed_dictionaries({k: st.floats() | st.integers() for k in ROW}))
def test_any_json_is_a_prediction_or_a_client_error(schema: PredictSchema, value: Any) -> None:
    try:
        rows, _ = schema.parse(json.dumps(value).encode())
    except ServerError as exc:
        assert 400 <= exc.status < 500
    else:
        assert rows.shape[1] == 4
