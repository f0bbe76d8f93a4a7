"""A tenant in bad faith against metrics confinement: PromQL written to read another namespace's series,
and PromQL written to stall the operator for every tenant.

Each leak attempt is either refused or, once confined, has the fleet's namespace in every selector; where
the Debian `promtool` is installed, Prometheus' own evaluator (2.42) runs the confined text over series
of two namespaces and must return nothing of the other's. The stall attempts are queries the CRD admits
(at most 4096 characters) whose parse and tree walks cost far more than linear in their nesting: they
must be refused from their text, before anything is parsed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from kubeforge.api.inferencefleet import Autoscaling
from kubeforge.metrics import promql
from kubeforge.metrics.scope import MAX_DEPTH, MAX_OPERATIONS, QueryRefusedError, confine, is_confined

MINE = "mine"
OTHER = "other"
SECRET = 4242.0
"""The other tenant's value: it must never come back."""

LEAKS = [
    'secret{namespace="other"}',
    '{__name__=~".+"}',
    'label_replace(secret{namespace="other"}, "namespace", "mine", "", "")',
    'label_join(secret, "namespace", "", "pod")',
    "secret offset 1m",
    "secret offset -1m",
    "secret @ 100",
    "secret @ start()",
    "max_over_time(secret[1m:10s])",
    'max_over_time(secret{namespace="other"}[5m] offset 1m)',
    "count by (namespace) (secret)",
    "secret * on() group_left vector(1)",
    'vector(1) or on() secret{namespace="other"}',
    'absent(secret{namespace="other"})',
    'secret{namespace="oth\\u0065r"}',
    "secret{namespace='other'}",
    "secret{namespace=`other`}",
    'secret{namespace!="mine"}',
    'secret{namespace=~"other|mine"}',
    'sum(secret) # {namespace="other"}\n + 0',
    'offset{namespace="other"}',
    "sum(by)",
    'count_values("namespace", secret)',
    "sum(secret) + on(namespace) group_right secret",
    "sum(secret) and on() (count(secret) > 0)",
    "last_over_time(secret[1h])",
]


@pytest.mark.parametrize("query", LEAKS)
def test_a_leak_attempt_is_refused_or_confined(query: str) -> None:
    try:
        out = confine(query, MINE)
    except QueryRefusedError:
        return
    assert is_confined(out, MINE), out
    assert confine(out, MINE) == out


@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs Debian's promtool (make system-deps)")
def test_prometheus_itself_returns_nothing_of_the_other_namespace(tmp_path: Path) -> None:
    confined = []
    for query in LEAKS:
        try:
            confined.append(confine(query, MINE))
        except QueryRefusedError:
            continue
    series = ["secret", "offset", "by"]
    doc = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": f'{name}{{namespace="{ns}"}}', "values": f"{value:g}x20"}
                    for name in series
                    for ns, value in ((MINE, 1.0), (OTHER, SECRET))
                ],
                # Every expectation is "nothing": promtool prints what each query really returned.
                "promql_expr_test": [
                    {"expr": text, "eval_time": "10m", "exp_samples": []} for text in confined
                ],
            }
        ],
    }
    path = tmp_path / "leaks.yaml"
    path.write_text(yaml.safe_dump(doc))
    run = subprocess.run(
        ["promtool", "test", "rules", str(path)], capture_output=True, text=True, timeout=60, check=False
    )
    report = run.stdout + run.stderr
    assert "got:" in report, report  # the own namespace's series did come back: the evaluation ran
    got = [line for line in report.splitlines() if "got:" in line]
    assert not any(f'namespace="{OTHER}"' in line or "4.242E+03" in line for line in got), report


# Shapes that cost the parser library's tree walks far more than linear in their nesting: on f1755bd a
# 299-character chain took ~3 s, a 900-character one over a minute, and a 4096-character one did not end,
# all on the operator's event loop.
STALLS = {
    "binary chain": "+".join(["up"] * 100),
    "binary chain at the CRD's bound": "+".join(["up"] * 1365),
    "unary chain": "-" * 600 + "up",
    "nested parentheses": "(" * 300 + "up" + ")" * 300,
    "nested calls": "abs(" * 400 + "up" + ")" * 400,
    "nested subqueries": "max_over_time(" * 100 + "up" + "[1m:1s])" * 100,
    "or chain": " or ".join(["sum(x)"] * 400),
}


@pytest.mark.parametrize("query", STALLS.values(), ids=STALLS.keys())
def test_a_query_too_deep_or_too_large_to_walk_is_refused_from_its_text(query: str) -> None:
    assert len(query) <= 4096  # the CRD admits it
    with pytest.raises(QueryRefusedError, match="at most"):
        confine(query, MINE)


def test_brackets_hidden_in_strings_comments_and_matchers_are_counted_as_the_parser_reads_them() -> None:
    deep = "(" * (MAX_DEPTH + 1) + "up" + ")" * (MAX_DEPTH + 1)
    # A `}` in a label value does not end the matchers early, so the nesting after it is still seen.
    with pytest.raises(QueryRefusedError, match="brackets deep"):
        confine('x{a="}"} + ' + deep + ' + y{b="c"}', MINE)
    # Brackets inside a string or a comment are text, not nesting.
    text = 'label_replace(up, "a", "' + "(" * 40 + '", "", "") # ' + "(" * 40
    assert is_confined(confine(text, MINE), MINE)


def test_queries_at_the_limits_and_every_built_in_one_are_still_confined() -> None:
    at_limit = "+".join(["up"] * (MAX_OPERATIONS + 1))
    assert is_confined(confine(at_limit, MINE), MINE)
    deepest = "(" * MAX_DEPTH + "up" + ")" * MAX_DEPTH
    assert is_confined(confine(deepest, MINE), MINE)
    spec = Autoscaling.model_validate(
        {"minReplicas": 1, "maxReplicas": 2, "target": 1, "metric": "latencyP95"}
    )
    assert is_confined(promql.fleet_queries(spec, MINE, "chat").stable, MINE)


def test_a_fleet_with_a_stalling_query_gets_a_refusal_naming_the_field() -> None:
    spec = Autoscaling.model_validate(
        {"minReplicas": 1, "maxReplicas": 2, "target": 1, "query": STALLS["binary chain at the CRD's bound"]}
    )
    with pytest.raises(promql.MetricsError) as info:
        promql.fleet_queries(spec, MINE, "chat")
    assert info.value.reason == "QueryRefused"
    assert info.value.message.startswith("autoscaling.query refused: the query has")
