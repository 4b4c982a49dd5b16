"""The chart's Grafana dashboard and Prometheus alerting rules: valid, tested, and about metrics that exist."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from model_operator.metrics import OperatorMetrics
from model_operator.spec import Phase, Verdict
from model_server.metrics import ServerMetrics
from tests.rig import paths
from tests.support.dashboards import (
    DEFAULT_VARIABLES,
    UnknownVariableError,
    dashboard_queries,
    load_dashboard,
    panels,
    substitute,
)

FILES = paths.REPO / "charts" / "modelrollout" / "files"
RULES = FILES / "alerts" / "modelrollout.rules.yaml"
RULE_TESTS = paths.REPO / "tests" / "unit" / "chart" / "alerts.test.yaml"
RUNBOOKS = paths.REPO / "docs" / "runbooks.md"
RUNBOOK_URL = "https://github.com/modelrollout/modelrollout/blob/main/docs/runbooks.md#"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {"timeseries", "stat", "table"}
SERVER_FILTERS = ('namespace=~"$namespace"', 'modeldeployment=~"$rollout"', 'model=~"$model"')
OPERATOR_FILTERS = ('namespace=~"$namespace"', 'name=~"$rollout"')
SELECTOR = re.compile(r"\b(model(?:server|rollout)_\w+)(\{[^}]*\})?")
METRIC = re.compile(r"\b(model(?:server|rollout)_\w+)")
LABEL_VALUES = re.compile(r"^label_values\((?P<selector>.+),\s*(?P<label>\w+)\)$")
MATCHER_VALUES = re.compile(r'\b(?P<label>phase|verdict)=~?"(?P<values>[^"]*)"')
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def promtool(*args: str) -> None:
    result = subprocess.run(
        [str(paths.binary("promtool")), *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)} failed:\n{result.stdout}{result.stderr}"


def alerting_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def rule_expressions() -> list[str]:
    return [rule["expr"] for rule in alerting_rules()]


def exported_metric_names() -> set[str]:
    registries = [ServerMetrics("iris", "1.0.0", "stable").registry, OperatorMetrics().registry]
    families = [family for registry in registries for family in registry.collect()]
    return {family.name + suffix for family in families for suffix in SUFFIXES[family.type]}


def dashboard_targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(panel, target) for panel in panels(load_dashboard()) for target in panel.get("targets", [])]


def dashboard_expressions() -> list[str]:
    return [target["expr"] for _, target in dashboard_targets()]


def variable_selectors() -> dict[str, str]:
    """Each query variable's series selector (the first argument of ``label_values``)."""
    variables = load_dashboard()["templating"]["list"]
    selectors = {}
    for variable in variables:
        if variable["type"] == "query":
            match = LABEL_VALUES.match(variable["definition"])
            assert match, f"variable {variable['name']}: expected label_values(selector, label)"
            selectors[variable["name"]] = match["selector"]
    return selectors


def github_anchor(heading: str) -> str:
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


# --- alerting rules ------------------------------------------------------------------------------------


def test_rules_pass_promtool_check() -> None:
    promtool("check", "rules", str(RULES))


def test_rules_pass_their_promtool_unit_tests() -> None:
    promtool("test", "rules", str(RULE_TESTS))


def test_rules_are_one_group_of_the_expected_alerts() -> None:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    assert [group["name"] for group in groups] == ["modelrollout"]
    assert {rule["alert"] for rule in alerting_rules()} == {
        "ModelRolloutRolledBack",
        "ModelRolloutStuck",
        "ModelRolloutAnalysisFailing",
        "ModelRolloutOperatorDown",
        "ModelServerHighErrorRate",
    }


@pytest.mark.parametrize("rule", alerting_rules(), ids=lambda rule: str(rule["alert"]))
def test_alert_has_severity_summary_description_and_runbook(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"warning", "critical"}
    annotations = rule["annotations"]
    assert annotations["summary"].strip()
    assert annotations["description"].strip()
    assert annotations["runbook_url"] == RUNBOOK_URL + rule["alert"].lower()


def test_every_runbook_link_has_a_section() -> None:
    headings = [line.lstrip("#") for line in RUNBOOKS.read_text().splitlines() if line.startswith("## ")]
    anchors = {github_anchor(heading) for heading in headings}
    for rule in alerting_rules():
        assert rule["annotations"]["runbook_url"].removeprefix(RUNBOOK_URL) in anchors, rule["alert"]


def test_every_alert_is_tested_firing_and_quiet() -> None:
    cases = [case for test in yaml.safe_load(RULE_TESTS.read_text())["tests"] for case in test["alert_rule_test"]]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    alerts = {rule["alert"] for rule in alerting_rules()}
    assert alerts <= firing, f"never seen firing: {alerts - firing}"
    assert alerts <= quiet, f"never seen quiet: {alerts - quiet}"


def test_rules_file_holds_only_prometheus_templates() -> None:
    """The chart ships the file verbatim: any ``{{ }}`` is Prometheus's (labels, value), never Helm's."""
    templates = re.findall(r"\{\{(.*?)\}\}", RULES.read_text())
    assert templates
    for template in templates:
        assert re.match(r"\s*\$(labels|value)\b", template), f"not a Prometheus alert template: {{{{{template}}}}}"


# --- dashboard -----------------------------------------------------------------------------------------


def test_dashboard_identity_and_variables() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "modelrollout"
    assert dashboard["title"] == "modelrollout — model rollouts"
    assert dashboard["schemaVersion"] == 39
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "model", "rollout"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE
        assert variables[name]["includeAll"] is True
        assert variables[name]["allValue"] == ".*", "All must match series without the label, too"
    assert set(variables) <= set(DEFAULT_VARIABLES)


def test_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in panels(load_dashboard())]
    assert len(ids) == len(set(ids))


def test_panels_do_not_overlap() -> None:
    boxes = [panel["gridPos"] for panel in panels(load_dashboard())]
    for box in boxes:
        assert box["x"] >= 0
        assert box["x"] + box["w"] <= 24
    for a, b in itertools.combinations(boxes, 2):
        apart = a["x"] + a["w"] <= b["x"] or b["x"] + b["w"] <= a["x"]
        apart = apart or a["y"] + a["h"] <= b["y"] or b["y"] + b["h"] <= a["y"]
        assert apart, f"panels at {a} and {b} overlap"


@pytest.mark.parametrize("panel", panels(load_dashboard()), ids=lambda panel: str(panel["title"]))
def test_panel_is_described_and_queries_the_selected_datasource(panel: dict[str, Any]) -> None:
    assert panel["type"] in PANEL_TYPES
    assert panel["description"].strip()
    assert panel["datasource"] == DATASOURCE
    assert panel["targets"]
    for target in panel["targets"]:
        assert target["datasource"] == DATASOURCE
        assert target["expr"].strip()
    ref_ids = [target["refId"] for target in panel["targets"]]
    assert len(ref_ids) == len(set(ref_ids))


def test_rate_windows_follow_the_dashboard() -> None:
    for expr in dashboard_expressions():
        for window in re.findall(r"\[([^\]]+)\]", expr):
            assert window in {"$__rate_interval", "$__range"}, f"fixed window [{window}] in {expr}"


def test_queries_filter_by_the_selected_namespace_model_and_rollout() -> None:
    for expr in dashboard_expressions():
        for metric, selector in SELECTOR.findall(expr):
            filters = SERVER_FILTERS if metric.startswith("modelserver_") else OPERATOR_FILTERS
            for wanted in filters:
                assert wanted in selector, f"{metric}{selector} lacks {wanted}"


def test_every_expression_parses(tmp_path: Path) -> None:
    """promtool parses each query and variable selector, variables filled in, as a recording rule."""
    expressions = {
        f"dashboard:panel_{panel['id']}:{target['refId']}": target["expr"] for panel, target in dashboard_targets()
    }
    expressions |= {f"dashboard:variable_{name}": selector for name, selector in variable_selectors().items()}
    rules = [{"record": record, "expr": substitute(expr, DEFAULT_VARIABLES)} for record, expr in expressions.items()]
    rule_file = tmp_path / "dashboard.rules.yaml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}, sort_keys=False))
    promtool("check", "rules", str(rule_file))


# --- both: the metrics they use --------------------------------------------------------------------------


def test_queries_and_rules_use_metrics_the_code_exports() -> None:
    exported = exported_metric_names()
    expressions = dashboard_expressions() + rule_expressions() + list(variable_selectors().values())
    used = {metric for expr in expressions for metric in METRIC.findall(expr)}
    assert used - exported == set()
    assert {"modelserver_requests_total", "modelrollout_phase"} <= used


def test_phase_and_verdict_matchers_name_real_values() -> None:
    known = {"phase": {phase.value for phase in Phase}, "verdict": {verdict.value for verdict in Verdict}}
    for expr in dashboard_expressions() + rule_expressions():
        for match in MATCHER_VALUES.finditer(expr):
            values = set(match["values"].split("|"))
            assert values <= known[match["label"]], f"{match[0]} in {expr}"


# --- tests.support.dashboards -----------------------------------------------------------------------------


def test_substitute_fills_bare_and_braced_variables() -> None:
    text = 'rate(x{ns=~"$namespace", m="${model}"}[$__rate_interval])'
    assert substitute(text, {"namespace": "models", "model": "iris", "__rate_interval": "2m"}) == (
        'rate(x{ns=~"models", m="iris"}[2m])'
    )


def test_substitute_refuses_unknown_variables() -> None:
    with pytest.raises(UnknownVariableError, match=r"\$modelx"):
        substitute('x{model=~"$modelx"}', {"model": "iris"})


def test_dashboard_queries_take_real_values() -> None:
    variables = {**DEFAULT_VARIABLES, "namespace": "models", "model": "iris", "rollout": "iris"}
    queries = dashboard_queries(variables=variables)
    assert len(queries) == len(dashboard_targets())
    titles = {title for title, _ in queries}
    assert {"Canary weight: desired vs observed", "Error rate (5xx) by track"} <= titles
    for _, expr in queries:
        assert "$" not in expr
        assert ".*" not in expr.replace('job=~".*modelrollout-operator.*"', "")
