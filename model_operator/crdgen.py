"""Generate the ModelDeployment CRD from the pydantic models in ``spec.py`` (``make crds``).

pydantic emits JSON Schema 2020-12; Kubernetes wants a *structural* OpenAPI v3.0 schema: no $refs,
a type on every node, ``x-kubernetes-int-or-string`` instead of string|integer unions, boolean
exclusive bounds. The CEL rules declared with each model travel along unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from model_operator.spec import GROUP, KIND, PLURAL, SHORT_NAMES, VERSION, ModelDeploymentSpec, ModelDeploymentStatus

DROP = {"title", "$defs"}


def structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = defs[node["$ref"].split("/")[-1]]
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return structural(merged, defs)
    if "anyOf" in node:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        types = {o.get("type") for o in options}
        if types == {"string", "integer"}:
            return structural({**rest, "x-kubernetes-int-or-string": True}, defs)
        if len(options) == 1:
            return structural({**options[0], **rest}, defs)
        raise ValueError(f"cannot express anyOf {options} structurally")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in DROP:
            continue
        if key == "default" and isinstance(value, dict | list | type(None)):
            continue
        if key == "additionalProperties" and value is False:
            continue  # structural schemas prune unknown fields instead
        if key == "const":
            out["enum"] = [value]
            continue
        if key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
            continue
        if key == "properties":
            out[key] = {name: structural(prop, defs) for name, prop in value.items()}
            continue
        out[key] = structural(value, defs)
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def openapi_schema(model: type[Any]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, ref_template="#/$defs/{model}")
    schema: dict[str, Any] = structural(raw, raw.get("$defs", {}))
    return schema


def crd() -> dict[str, Any]:
    spec_schema = openapi_schema(ModelDeploymentSpec)
    status_schema = openapi_schema(ModelDeploymentStatus)
    status_schema.pop("required", None)
    columns = [
        ("Phase", "string", ".status.phase"),
        ("Stable", "string", ".status.stableVersion"),
        ("Canary", "string", ".status.canaryVersion"),
        ("Weight", "integer", ".status.canaryWeight"),
        ("Age", "date", ".metadata.creationTimestamp"),
    ]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": SHORT_NAMES,
                "categories": ["all", "modelrollout"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [{"name": n.upper(), "type": t, "jsonPath": p} for n, t, p in columns],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "A scikit-learn model served and rolled out safely by modelrollout.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    header = "# Generated from model_operator/spec.py by `make crds`; do not edit by hand.\n"
    return header + yaml.safe_dump(crd(), sort_keys=False, width=120)


def main() -> None:
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("crds/modeldeployments.yaml")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render())
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
