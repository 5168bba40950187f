"""The ablation document (the JSON of ``pldc ablate``), its text table and its HTML report.

The document is plain JSON, so ``pldc report`` can render a saved run again without scoring.
Its schema is described in ``docs/ablation.md``. The HTML page is self-contained: styles are
inline, figures are PNG data URIs drawn with matplotlib's Agg renderer, and a Content Security
Policy forbids scripts and every external load. Every text from the ruleset or the data is
escaped by Jinja's autoescaping.
"""

from __future__ import annotations

import base64
import importlib.util
import io
from collections.abc import Iterator
from typing import Any

import jinja2

from pldc import ast
from pldc.ablate import CONFIDENCE, VERDICT_CRITERIA, Ablation
from pldc.errors import UsageError
from pldc.format import format_condition
from pldc.pipeline import CheckedRuleset

SCHEMA = "pldc-ablation/1"
CHANGE = "change = score without the left-out rules minus score of the full ruleset"

Document = dict[str, Any]


def build_document(ablation: Ablation, checked: CheckedRuleset, header: dict[str, Any]) -> Document:
    """Collect an ablation run, the ruleset's rules with provenance and ``header`` into one JSON document."""
    position = {rule.id.value: number for number, rule in enumerate(checked.ordered, 1)}
    titles = {group.name.value: group.title for group in checked.ruleset.groups}
    return {
        "schema": SCHEMA,
        **header,
        "bootstrap": {"resamples": ablation.resamples, "seed": ablation.seed, "confidence": CONFIDENCE},
        "criteria": {**VERDICT_CRITERIA, "change": CHANGE},
        "rules": [_rule_json(rule, position.get(rule.id.value), titles) for rule in checked.ruleset.rules],
        "full": ablation.full.to_json(),
        "variants": [variant.to_json() for variant in ablation.variants],
    }


def _rule_json(rule: ast.Rule, position: int | None, titles: dict[str, str | None]) -> dict[str, Any]:
    return {
        "id": rule.id.value,
        "position": position,
        "title": rule.title,
        "group": rule.group,
        "group_title": titles.get(rule.group) if rule.group else None,
        "condition": format_condition(rule.condition) if rule.condition is not None else None,
        "label": rule.label.value if rule.label is not None else None,
        "rationale": rule.rationale,
        "priority": rule.effective_priority,
        "overrides": [name.value for name in rule.overrides],
        "examples": list(rule.examples),
        "support": rule.support,
        "confidence": rule.confidence,
        "teacher": rule.teacher,
        "tags": [tag.value for tag in rule.tags],
        "line": rule.span.line,
    }


# ---- text ------------------------------------------------------------------


def render_text(document: Document) -> str:
    """Render the document as the table ``pldc ablate`` prints."""
    return "\n".join(_text_lines(document)) + "\n"


def _text_lines(document: Document) -> Iterator[str]:
    yield from _header_lines(document)
    yield ""
    yield from _table_lines(document)
    yield ""
    yield "per-class F1 change with its 95% interval:"
    for variant in document["variants"]:
        parts = [
            f"{label} {effect['delta']:+.4f} [{effect['low']:+.4f}, {effect['high']:+.4f}]"
            for label, effect in variant["per_class"].items()
        ]
        yield f"  {variant['name']}: " + "; ".join(parts)
    yield ""
    yield "flipped predictions (example id: gold, full ruleset -> without):"
    for variant in document["variants"]:
        flips = variant["flips"]
        yield f"  {variant['name']}: {len(flips)} flipped"
        for flip in flips:
            yield f"    {flip['id']}: gold {flip['gold']}, {flip['before']} -> {flip['after']} ({_flip_kind(flip)})"
    yield ""
    for verdict, criterion in VERDICT_CRITERIA.items():
        yield f"{verdict}: {criterion}"
    if "prune" in document:
        yield from _prune_lines(document["prune"])


def _header_lines(document: Document) -> Iterator[str]:
    full = document["full"]
    metrics = full["metrics"]
    bootstrap = document["bootstrap"]
    yield (
        f"ruleset {document['ruleset']} ({len(document['rules'])} rules) on {document['data']} "
        f"({full['examples']} examples{_sample_note(document)}, {document['framing']})"
    )
    yield f"student {document['model']}, calibration {document['calibration']}, template {document['template']}"
    yield (
        f"full ruleset: macro-F1 {metrics['macro_f1']:.4f}, accuracy {metrics['accuracy']:.4f}, "
        f"{full['seconds']:.1f} s ({full['examples_per_second']:.2f} examples/s), prompt {full['prompt_tokens']} tokens"
    )
    yield (
        f"paired bootstrap: {bootstrap['resamples']} resamples, seed {bootstrap['seed']}, "
        f"{bootstrap['confidence']:.0%} intervals; {CHANGE}"
    )


def _table_lines(document: Document) -> Iterator[str]:
    labels: list[str] = document["full"]["metrics"]["labels"]
    name_width = max([len("left out"), *(len(v["name"]) for v in document["variants"])]) + 2
    header = f"{'left out':<{name_width}}{'kind':<7}{'macro-F1':>9}{'change':>9}  {'95% interval':<20}{'flips':>6}  "
    yield header + f"{'verdict':<9}" + "".join(f"{_short(label):>11}" for label in labels)
    for variant in document["variants"]:
        effect = variant["macro_f1"]
        interval = f"[{effect['low']:+.4f}, {effect['high']:+.4f}]"
        yield (
            f"{variant['name']:<{name_width}}{variant['kind']:<7}{variant['result']['metrics']['macro_f1']:>9.4f}"
            f"{effect['delta']:>+9.4f}  {interval:<20}{len(variant['flips']):>6}  {variant['verdict']:<9}"
            + "".join(f"{variant['per_class'][label]['delta']:>+11.4f}" for label in labels)
        )


def _prune_lines(prune: dict[str, Any]) -> Iterator[str]:
    yield ""
    yield f"pruned ruleset written to {prune['path']} ({prune['criterion']}):"
    if not prune["removed_rules"]:
        yield "  no rule met the criterion, so the file is the original in canonical layout"
    for removal in prune["removals"]:
        yield f"  removed {removal['kind']} {removal['name']}: {removal['reason']}"


def _sample_note(document: Document) -> str:
    sample = document.get("sample")
    return f", a random sample drawn with seed {sample['seed']}" if sample else ""


def _flip_kind(flip: dict[str, str]) -> str:
    """Name what leaving the rules out did to the example: ``fixed``, ``broken`` or ``still wrong``."""
    if flip["after"] == flip["gold"]:
        return "fixed"
    if flip["before"] == flip["gold"]:
        return "broken"
    return "still wrong"


def _short(label: str) -> str:
    return label if len(label) <= 10 else label[:9] + "."


# ---- HTML ------------------------------------------------------------------

_VERDICT_COLOURS = {"helpful": "#2e7d32", "harmful": "#c62828", "inert": "#9e9e9e"}

_PAGE = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined).from_string(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src data:; style-src 'unsafe-inline'">
<title>Ablation of {{ doc.ruleset }}</title>
<style>
body { font-family: sans-serif; margin: 2em auto; max-width: 1200px; color: #222; line-height: 1.4; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.5em; vertical-align: top; text-align: left; }
th { background: #f3f3f3; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code { font-size: 0.95em; }
.helpful { color: #2e7d32; font-weight: bold; } .harmful { color: #c62828; font-weight: bold; }
.inert { color: #666; }
img { max-width: 100%; }
.small { font-size: 0.85em; color: #555; }
</style>
</head>
<body>
<h1>Ablation of <code>{{ doc.ruleset }}</code></h1>
<p>{{ doc.full.examples }} examples
{% if doc.get("sample") %}(a random sample drawn with seed {{ doc.sample.seed }}){% endif %}
from <code>{{ doc.data }}</code> ({{ doc.framing }}), student
{{ doc.model }}, calibration {{ doc.calibration }}, template {{ doc.template }}.
Full ruleset: macro-F1 <b>{{ "%.4f"|format(doc.full.metrics.macro_f1) }}</b>,
accuracy {{ "%.4f"|format(doc.full.metrics.accuracy) }}.</p>
<p class="small">Each variant leaves out one rule (or one group) and keeps the others in compiled order. Intervals
are paired bootstrap {{ "%.0f"|format(doc.bootstrap.confidence * 100) }}% percentile intervals over
{{ doc.bootstrap.resamples }} resamples of the examples (seed {{ doc.bootstrap.seed }}); {{ doc.criteria.change }}.
{% for verdict in ["helpful", "harmful", "inert"] %}<span class="{{ verdict }}">{{ verdict }}</span>:
{{ doc.criteria[verdict] }}. {% endfor %}</p>

<h2>Effect of leaving each rule out</h2>
<img alt="change in macro-F1 per left-out rule, with 95% intervals" src="{{ figures.ablation }}">
<table>
<tr><th>left out</th><th>kind</th><th>macro-F1</th><th>change</th><th>95% interval</th><th>verdict</th>
{% for label in labels %}<th>change in F1 of {{ label }}</th>{% endfor %}<th>flips</th></tr>
{% for v in doc.variants %}
<tr><td><code>{{ v.name }}</code></td><td>{{ v.kind }}</td>
<td class="num">{{ "%.4f"|format(v.result.metrics.macro_f1) }}</td>
<td class="num">{{ "%+.4f"|format(v.macro_f1.delta) }}</td>
<td class="num">[{{ "%+.4f"|format(v.macro_f1.low) }}, {{ "%+.4f"|format(v.macro_f1.high) }}]</td>
<td class="{{ v.verdict }}">{{ v.verdict }}</td>
{% for label in labels %}{% set e = v.per_class[label] %}
<td class="num">{{ "%+.4f"|format(e.delta) }}<br><span class="small">[{{ "%+.3f"|format(e.low) }},
{{ "%+.3f"|format(e.high) }}]</span></td>{% endfor %}
<td class="num">{{ v.flips|length }}</td></tr>
{% endfor %}
</table>

<h2>Rules</h2>
<table>
<tr><th>#</th><th>rule</th><th>group</th><th>when</th><th>then</th><th>because</th><th>overrides</th>
<th>provenance</th><th>line</th></tr>
{% for r in doc.rules %}
<tr><td class="num">{{ r.position if r.position is not none else "" }}</td>
<td><code>{{ r.id }}</code><br>{{ r.title }}</td>
<td>{{ r.group_title or r.group or "" }}</td>
<td><code>{{ r.condition or "" }}</code></td><td><code>{{ r.label or "" }}</code></td>
<td>{{ r.rationale or "" }}</td><td>{{ r.overrides|join(", ") }}</td>
<td class="small">{% if r.teacher %}teacher: {{ r.teacher }}<br>{% endif %}
{% if r.support is not none %}support: {{ r.support }}<br>{% endif %}
{% if r.confidence is not none %}confidence: {{ r.confidence }}<br>{% endif %}
{% if r.examples %}examples: {{ r.examples|join(", ") }}<br>{% endif %}
{% if r.tags %}tags: {{ r.tags|join(", ") }}{% endif %}</td>
<td class="num">{{ r.line }}</td></tr>
{% endfor %}
</table>

<h2>Full ruleset</h2>
<img alt="confusion matrix of the full ruleset" src="{{ figures.confusion }}">
<img alt="precision, recall and F1 per class of the full ruleset" src="{{ figures.per_class }}">
<table>
<tr><th>label</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>
{% for c in doc.full.metrics.per_class %}
<tr><td>{{ c.label }}</td><td class="num">{{ "%.4f"|format(c.precision) }}</td>
<td class="num">{{ "%.4f"|format(c.recall) }}</td><td class="num">{{ "%.4f"|format(c.f1) }}</td>
<td class="num">{{ c.support }}</td></tr>
{% endfor %}
</table>

<h2>Latency</h2>
<img alt="examples per second per variant" src="{{ figures.latency }}">
<table>
<tr><th>variant</th><th>seconds</th><th>examples/s</th><th>prompt tokens</th></tr>
<tr><td>full ruleset</td><td class="num">{{ doc.full.seconds }}</td>
<td class="num">{{ doc.full.examples_per_second }}</td><td class="num">{{ doc.full.prompt_tokens }}</td></tr>
{% for v in doc.variants %}
<tr><td>without <code>{{ v.name }}</code></td><td class="num">{{ v.result.seconds }}</td>
<td class="num">{{ v.result.examples_per_second }}</td><td class="num">{{ v.result.prompt_tokens }}</td></tr>
{% endfor %}
</table>

{% if doc.prune is defined %}
<h2>Pruned ruleset</h2>
<p>Written to <code>{{ doc.prune.path }}</code>: {{ doc.prune.criterion }}.</p>
{% if not doc.prune.removed_rules %}<p>No rule met the criterion.</p>{% endif %}
<ul>{% for r in doc.prune.removals %}<li>removed {{ r.kind }} <code>{{ r.name }}</code>: {{ r.reason }}</li>
{% endfor %}</ul>
{% endif %}

<h2>Flipped predictions</h2>
{% for v in doc.variants %}
<details><summary>without <code>{{ v.name }}</code>: {{ v.flips|length }} flipped</summary>
<table><tr><th>example</th><th>gold</th><th>full ruleset</th><th>without</th></tr>
{% for f in v.flips %}<tr><td><code>{{ f.id }}</code></td><td>{{ f.gold }}</td><td>{{ f.before }}</td>
<td>{{ f.after }}</td></tr>
{% endfor %}</table></details>
{% endfor %}
</body>
</html>
"""
)


def require_matplotlib() -> None:
    """Raise :class:`UsageError` unless matplotlib, which draws the report's figures, is installed."""
    if importlib.util.find_spec("matplotlib") is None:
        raise UsageError("HTML reports need matplotlib; install it with: pip install 'pldc[report]'")


def render_html(document: Document) -> str:
    """Render the document as a self-contained HTML page with its figures embedded."""
    require_matplotlib()
    figures = {
        "ablation": _data_uri(_ablation_figure(document)),
        "confusion": _data_uri(_confusion_figure(document)),
        "per_class": _data_uri(_per_class_figure(document)),
        "latency": _data_uri(_latency_figure(document)),
    }
    return _PAGE.render(doc=document, labels=document["full"]["metrics"]["labels"], figures=figures)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _new_figure(width: float, height: float) -> Any:
    # A Figure made without pyplot keeps no global state and needs no GUI backend. savefig draws PNG with Agg.
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100, layout="constrained")


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def _ablation_figure(document: Document) -> bytes:
    variants = document["variants"]
    figure = _new_figure(8, 0.45 * len(variants) + 1.5)
    axes = figure.add_subplot()
    names = [v["name"] if v["kind"] == "rule" else f"group {v['name']}" for v in variants]
    deltas = [v["macro_f1"]["delta"] for v in variants]
    below = [v["macro_f1"]["delta"] - v["macro_f1"]["low"] for v in variants]
    above = [v["macro_f1"]["high"] - v["macro_f1"]["delta"] for v in variants]
    colours = [_VERDICT_COLOURS[v["verdict"]] for v in variants]
    rows = list(range(len(variants)))
    axes.barh(rows, deltas, xerr=[below, above], color=colours, capsize=4, ecolor="#333")
    # A dot marks each point estimate, so a change of exactly 0 is visible without a bar.
    axes.plot(deltas, rows, "o", color="#333", markersize=4)
    axes.set_yticks(rows, labels=names)
    axes.invert_yaxis()
    axes.axvline(0, color="#333", linewidth=0.8)
    axes.set_xlabel("change in macro-F1 without the rule (95% interval)")
    axes.set_title("Leave-one-out ablation (green helpful, red harmful, grey inert)")
    return _png(figure)


def _confusion_figure(document: Document) -> bytes:
    metrics = document["full"]["metrics"]
    labels = metrics["labels"]
    matrix = metrics["confusion_matrix"]
    figure = _new_figure(5, 4.2)
    axes = figure.add_subplot()
    image = axes.imshow(matrix, cmap="Blues")
    figure.colorbar(image, ax=axes)
    axes.set_xticks(range(len(labels)), labels=labels, rotation=30, ha="right")
    axes.set_yticks(range(len(labels)), labels=labels)
    axes.set_xlabel("predicted")
    axes.set_ylabel("gold")
    axes.set_title("Confusion matrix, full ruleset")
    top = max((max(row) for row in matrix), default=0)
    for row, counts in enumerate(matrix):
        for column, count in enumerate(counts):
            colour = "white" if count > top / 2 else "black"
            axes.text(column, row, str(count), ha="center", va="center", color=colour)
    return _png(figure)


def _per_class_figure(document: Document) -> bytes:
    per_class = document["full"]["metrics"]["per_class"]
    figure = _new_figure(6, 4.2)
    axes = figure.add_subplot()
    width = 0.27
    positions = range(len(per_class))
    for offset, measure in enumerate(("precision", "recall", "f1")):
        values = [figures[measure] for figures in per_class]
        axes.bar([p + (offset - 1) * width for p in positions], values, width, label=measure)
    axes.set_xticks(list(positions), labels=[figures["label"] for figures in per_class])
    axes.set_ylim(0, 1)
    axes.legend(loc="upper center", bbox_to_anchor=(0.5, -0.1), ncols=3)
    axes.set_title("Per-class figures, full ruleset")
    return _png(figure)


def _latency_figure(document: Document) -> bytes:
    runs = [("full ruleset", document["full"])] + [(f"without {v['name']}", v["result"]) for v in document["variants"]]
    figure = _new_figure(8, 0.4 * len(runs) + 1.5)
    axes = figure.add_subplot()
    rows = list(range(len(runs)))
    axes.barh(rows, [run["examples_per_second"] for _, run in runs], color="#5c6bc0")
    axes.set_yticks(rows, labels=[name for name, _ in runs])
    axes.invert_yaxis()
    axes.set_xlabel("examples per second (wall time of scoring, this machine)")
    axes.set_title("Scoring throughput per variant")
    return _png(figure)
