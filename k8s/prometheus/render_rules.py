"""Renders rules.yml, the plain rule-group file promtool reads, from the PrometheusRule.

k8s/base/prometheus-rule.yaml is the source of truth (the Prometheus Operator loads it in a
cluster); promtool and a plain Prometheus want the bare `groups:` document. A test fails when
the two differ, so edit the PrometheusRule and run:

    .venv/bin/python k8s/prometheus/render_rules.py

`render(factor)` also serves the end-to-end test, which needs the same rules with every
duration scaled down (see tests/test_alerting_end_to_end.py for why).
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = HERE.parent / "base" / "prometheus-rule.yaml"
TARGET = HERE / "rules.yml"
HEADER = (
    "# Rendered from k8s/base/prometheus-rule.yaml (spec.groups) by render_rules.py: edit that\n"
    "# file, not this one. promtool check rules / promtool test rules read this.\n"
)
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
# A duration literal inside a range selector `[30m]`, a subquery `[30m:1m]` or after `offset`.
_DURATION = re.compile(
    r"(?<=[\[:])(\d+)(ms|s|m|h|d|w|y)(?=[\]:])|(?<=offset )(\d+)(ms|s|m|h|d|w|y)"
)


def groups() -> list[dict]:
    """The rule groups of the PrometheusRule, as plain data."""
    return yaml.safe_load(SOURCE.read_text())["spec"]["groups"]


def render(factor: float = 1.0) -> str:
    """The rules.yml text; `factor` < 1 scales every `for:`, range and offset duration."""
    rendered = groups()
    if factor != 1.0:
        for group in rendered:
            for rule in group["rules"]:
                rule["expr"] = _DURATION.sub(lambda m: _scaled(m, factor), rule["expr"])
                if "for" in rule:
                    rule["for"] = _scale(rule["for"], factor)
    return HEADER + yaml.dump({"groups": rendered}, Dumper=_BlockDumper, sort_keys=False, width=100)


def _scaled(match: re.Match, factor: float) -> str:
    number, unit = (match.group(1), match.group(2)) if match.group(1) else match.group(3, 4)
    return _scale(number + unit, factor)


def _scale(duration: str, factor: float) -> str:
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h|d|w|y)", duration).groups()
    milliseconds = max(1, round(int(number) * _UNITS[unit] * 1000 * factor))
    return f"{milliseconds // 1000}s" if milliseconds % 1000 == 0 else f"{milliseconds}ms"


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (PromQL, descriptions) as `|` blocks, as people write them."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str)


if __name__ == "__main__":
    TARGET.write_text(render())
    print(f"wrote {TARGET}")
