"""``pldc distill build``: normalise, cluster, synthesise and resolve a hand-written extract.jsonl.

``extract_sentiment.jsonl`` contains 30 teacher rules over the sentiment fixture task, written as
six topics (PLANTED) and two one-off rules (t16, t30) that should end up as noise.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from gemini_server import GeminiServer, load_embeddings

from pldc import ast
from pldc.analysis import analyze
from pldc.cache import CallCache
from pldc.cluster import (
    EPS_MAX,
    EPS_MIN,
    ClusterSettings,
    Embedder,
    GeminiRuleEmbedder,
    Matrix,
    TfidfEmbedder,
    cluster,
    eps_candidates,
    knee,
    knee_eps,
    rule_text,
    score_eps,
    silhouette_eps,
)
from pldc.distill import ExtractStore
from pldc.distill_build import BuildHeader, BuildOptions, DraftRule, build, resolve_rules
from pldc.gemini import GeminiClient, GeminiSettings
from pldc.gemini_embed import GeminiEmbedder
from pldc.normalise import normalise
from pldc.pipeline import check_file, check_source, load_ruleset

from conftest import FIXTURES, run_pldc

DISTILL = FIXTURES / "distill"
TASK = DISTILL / "sentiment_task.pld"
EXTRACT = DISTILL / "extract_sentiment.jsonl"
DATA = DISTILL / "reviews_train.jsonl"
LABELS = ["positive", "negative"]
PLANTED = {
    "performance": ["t01", "t02", "t03", "t04", "t05", "t06"],
    "design": ["t07", "t08", "t09", "t10", "t11"],
    "recommend": ["t12", "t13", "t14", "t15"],
    "defect": ["t17", "t18", "t19", "t20", "t21", "t22"],
    "support": ["t23", "t24", "t25", "t26"],
    "price": ["t27", "t28", "t29"],
}
ONE_OFF = ["t16", "t30"]
ALL_IDS = sorted({*ONE_OFF, *(i for ids in PLANTED.values() for i in ids)})
# Generated 32-dimensional vectors for the 30 rule texts, not recorded from the Gemini API: one direction
# shared by all plus one per planted topic, so every cosine distance is below 0.45.
NARROW_EMBEDDINGS = DISTILL / "embeddings_sentiment_narrow.json"


def run_dir_with_extract(base: Path, name: str = "run") -> Path:
    run_dir = base / name
    run_dir.mkdir()
    shutil.copy(EXTRACT, run_dir / "extract.jsonl")
    return run_dir


def build_in(run_dir: Path, embedder: Embedder | None = None, **options: Any) -> Path:
    result = build(BuildOptions(task_path=TASK, run_dir=run_dir, data=DATA, **options), embedder or TfidfEmbedder())
    return result.path


def topic_of(rule_id: str) -> str:
    return next((topic for topic, ids in PLANTED.items() if rule_id in ids), rule_id)


def clusters_of(run_dir: Path) -> list[list[str]]:
    document = json.loads((run_dir / "clusters.json").read_text())
    return [entry["members"] for entry in document["clusters"]]


def normalised_rules(run_dir: Path) -> dict[str, Any]:
    records = list(ExtractStore(run_dir).records.values())
    return normalise(records, load_ruleset(TASK).ruleset.features, run_dir)


# ---- the built ruleset --------------------------------------------------------------


def test_build_rules_cite_extracted_examples(tmp_path: Path) -> None:
    path = build_in(run_dir_with_extract(tmp_path))
    rules = load_ruleset(path).ruleset.rules
    cited = [example for rule in rules for example in rule.examples]
    assert sorted(cited) == ALL_IDS
    for rule in rules:
        assert rule.examples, rule.id.value
        assert list(rule.examples) == sorted(rule.examples)
        assert rule.support == len(rule.examples)
        assert rule.confidence is not None and 0 < rule.confidence <= 1


def test_build_output_passes_check(tmp_path: Path) -> None:
    path = build_in(run_dir_with_extract(tmp_path))
    result = run_pldc("check", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "error" not in result.stdout
    assert "warning" not in result.stdout


def test_build_orders_rules_by_support(tmp_path: Path) -> None:
    path = build_in(run_dir_with_extract(tmp_path))
    supports = [rule.support or 0 for rule in load_ruleset(path).ruleset.rules]
    assert supports == sorted(supports, reverse=True)


def test_build_numbers_rules_per_label(tmp_path: Path) -> None:
    path = build_in(run_dir_with_extract(tmp_path))
    ids = [rule.id.value for rule in load_ruleset(path).ruleset.rules]
    for label in LABELS:
        numbered = [rule_id for rule_id in ids if rule_id.startswith(f"{label}_")]
        assert numbered == [f"{label}_{number}" for number in range(1, len(numbered) + 1)]
    assert len(ids) == 8


def test_build_header_records_provenance(tmp_path: Path) -> None:
    path = build_in(run_dir_with_extract(tmp_path))
    ruleset = load_ruleset(path).ruleset
    assert ruleset.meta_value("teacher") == "gemini-3-flash-preview"
    assert ruleset.meta_value("data") == str(DATA)
    assert ruleset.meta_value("split") == "reviews_train"
    assert (ruleset.meta_value("embedder") or "").startswith("tfidf")
    assert "dbscan, eps" in (ruleset.meta_value("clustering") or "")


def test_build_twice_gives_identical_bytes(tmp_path: Path) -> None:
    first_dir = run_dir_with_extract(tmp_path, "first")
    second_dir = run_dir_with_extract(tmp_path, "second")
    first = build_in(first_dir).read_bytes()
    manifest = (first_dir / "manifest.json").read_bytes()
    assert build_in(first_dir).read_bytes() == first
    assert (first_dir / "manifest.json").read_bytes() == manifest
    assert build_in(second_dir).read_bytes() == first


def test_build_manifest_hashes_inputs(tmp_path: Path) -> None:
    run_dir = run_dir_with_extract(tmp_path)
    build_in(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    inputs = manifest["inputs"]
    for name in ("data", "task", "extract"):
        assert len(inputs[name]["sha256"]) == 64, name
    assert set(inputs["templates"]) == {"extract", "default"}
    assert manifest["parameters"]["eps"] == "auto"
    assert manifest["parameters"]["min_samples"] == 3
    assert manifest["embedder"]["name"] == "tfidf"


class CountingEmbedder:
    """A TF-IDF embedder that counts the texts it embeds."""

    name = "tfidf"

    def __init__(self) -> None:
        self.inner = TfidfEmbedder()
        self.embedded = 0

    def identity(self) -> dict[str, Any]:
        return self.inner.identity()

    def embed(self, items: Sequence[tuple[str, str]], progress: Callable[[int], None] | None = None) -> Matrix:
        self.embedded += len(items)
        return self.inner.embed(items, progress)


def test_build_skips_unchanged_stages(tmp_path: Path) -> None:
    run_dir = run_dir_with_extract(tmp_path)
    embedder = CountingEmbedder()
    build_in(run_dir, embedder)
    assert embedder.embedded == 30
    build_in(run_dir, embedder)
    assert embedder.embedded == 30
    build_in(run_dir, embedder, settings=ClusterSettings(method="kmeans"))
    assert embedder.embedded == 60


@pytest.mark.parametrize(
    ("method", "header"), [("agglomerative", "agglomerative, eps"), ("kmeans", "kmeans, k per label")]
)
def test_build_other_methods_pass_check(tmp_path: Path, method: str, header: str) -> None:
    path = build_in(run_dir_with_extract(tmp_path), settings=ClusterSettings(method=method))
    checked = check_file(path)
    assert checked.diagnostics == []
    assert (checked.ruleset.meta_value("clustering") or "").startswith(header)


# ---- normalise ---------------------------------------------------------------------


def test_normalise_merges_features_by_name(tmp_path: Path) -> None:
    document = normalised_rules(run_dir_with_extract(tmp_path))
    features = {feature["name"]: feature for feature in document["features"]}
    assert features["price_judgement"]["values"] == ["fair", "overpriced", "not_mentioned", "cheap_quality"]
    assert features["praises_performance"]["rules"] == 6
    assert len(features["praises_performance"]["other_definitions"]) == 1
    assert features["reports_defect"]["type"] == "bool"


def test_normalise_flags_inconsistent_types(tmp_path: Path) -> None:
    document = normalised_rules(run_dir_with_extract(tmp_path))
    [entry] = document["inconsistent"]
    assert entry["name"] == "time_to_failure"
    assert entry["types"] == {"bool": ["t21"], "one_of": ["t17", "t18", "t19", "t20"]}
    assert entry["renamed"] == {"bool": "time_to_failure_bool"}
    rules = {rule["id"]: rule for rule in document["rules"]}
    assert rules["t21"]["condition"] == "reports_defect and time_to_failure_bool"
    assert rules["t17"]["condition"] == "reports_defect and time_to_failure is soon"
    assert rules["t04"]["condition"] == "not mentions_complaint and praises_performance"


def test_normalise_reuses_task_features(tmp_path: Path) -> None:
    run_dir = run_dir_with_extract(tmp_path)
    task = tmp_path / "task.pld"
    task.write_text(
        TASK.read_text()
        + '\nfeature recommends: bool "The reviewer tells others to buy it."\n'
        + 'feature price_judgement: one of [cheap, fair] "How the review judges the price."\n'
    )
    records = list(ExtractStore(run_dir).records.values())
    document = normalise(records, load_ruleset(task).ruleset.features, run_dir)
    features = {feature["name"]: feature for feature in document["features"]}
    assert features["recommends"]["definition"] == "The reviewer tells others to buy it."
    assert features["recommends"]["source"] == "task"
    assert features["price_judgement"]["values"] == ["cheap", "fair", "overpriced", "not_mentioned", "cheap_quality"]
    assert features["price_judgement"]["added_values"] == ["overpriced", "not_mentioned", "cheap_quality"]


# ---- the automatic eps ---------------------------------------------------------------


def test_knee_of_flat_then_steep_curve() -> None:
    curve = np.array([0.10, 0.11, 0.11, 0.12, 0.12, 0.13, 0.60, 0.90])
    assert knee(curve) == pytest.approx(0.13)


def test_knee_needs_three_points() -> None:
    assert knee(np.array([0.1, 0.2])) is None


def test_knee_eps_clipped_to_range() -> None:
    rng = np.random.default_rng(0)
    identical = np.tile(rng.normal(size=8), (6, 1))
    assert knee_eps([identical], 3).eps == EPS_MIN
    opposite = np.vstack([np.eye(8), -np.eye(8)])
    assert knee_eps([opposite], 3).eps <= EPS_MAX


def test_eps_candidates_clipped_and_rounded_up() -> None:
    curve = np.array([0.0, 0.01, 0.123449, 0.3, 0.95])
    candidates = eps_candidates(curve, 0.3)
    assert candidates == sorted(set(candidates))
    assert candidates[0] == EPS_MIN
    assert candidates[-1] == EPS_MAX
    # Rounded up, so the rule whose k-distance is 0.123449 is still a core rule at the candidate.
    assert 0.1235 in candidates
    assert 0.3 in candidates


def separated_groups(rng: np.random.Generator, sizes: Sequence[int], spread: float) -> Matrix:
    """Points around orthogonal centres, one group per size, with Gaussian noise of the given spread."""
    rows = [np.eye(16)[number] + spread * rng.normal(size=(size, 16)) for number, size in enumerate(sizes)]
    return np.vstack(rows)


def test_silhouette_eps_separates_groups_at_any_scale() -> None:
    rng = np.random.default_rng(3)
    label = separated_groups(rng, [6, 5, 4], 0.15)
    choice = silhouette_eps([label], "dbscan", 3)
    assert choice.source == "auto: highest mean silhouette among k-distance quantiles"
    best = max(choice.candidates, key=lambda candidate: candidate.score)
    assert choice.eps == best.eps
    assert best.clusters == 3
    assert best.noise == 0
    # A shared offset shrinks every cosine distance; the choice follows the data down.
    narrow = label + 0.4 * np.ones(16)
    narrow_choice = silhouette_eps([narrow], "dbscan", 3)
    assert narrow_choice.eps < choice.eps
    assert max(narrow_choice.candidates, key=lambda candidate: candidate.score).clusters == 3


def test_score_eps_merged_label_scores_zero() -> None:
    rng = np.random.default_rng(4)
    label = separated_groups(rng, [5, 5], 0.05)
    merged = score_eps([label], "dbscan", 1.5, 3)
    assert merged.clusters == 1
    assert merged.noise == 0
    assert merged.score == 0
    apart = score_eps([label], "dbscan", 0.3, 3)
    assert apart.clusters == 2
    assert apart.score > 0.5
    all_noise = score_eps([label], "dbscan", 0.0001, 3)
    assert all_noise.noise == 10
    assert all_noise.score == 0


def assert_planted_recovered(run_dir: Path, topics: Sequence[str]) -> None:
    clusters = clusters_of(run_dir)
    for members in clusters:
        assert len({topic_of(member) for member in members}) == 1, f"cluster mixes topics: {members}"
    for topic in topics:
        assert PLANTED[topic] in clusters, f"planted topic {topic} not recovered: {clusters}"


def test_tfidf_auto_eps_recovers_planted_topics(tmp_path: Path) -> None:
    run_dir = run_dir_with_extract(tmp_path)
    build_in(run_dir)
    assert_planted_recovered(run_dir, list(PLANTED))
    report = json.loads((run_dir / "cluster_report.json").read_text())
    assert sorted(entry["id"] for entry in report["noise"]) == ONE_OFF
    eps = report["parameters"]["eps"]
    assert eps["source"] == "auto: highest mean silhouette among k-distance quantiles"
    assert EPS_MIN <= eps["eps"] <= EPS_MAX
    assert eps["eps"] in [candidate["eps"] for candidate in eps["candidates"]]
    clusters = json.loads((run_dir / "clusters.json").read_text())
    assert clusters["parameters"]["eps"] == eps


def test_tfidf_knee_eps_on_request(tmp_path: Path) -> None:
    run_dir = run_dir_with_extract(tmp_path)
    build_in(run_dir, settings=ClusterSettings(eps_rule="knee"))
    assert_planted_recovered(run_dir, ["design", "recommend", "defect", "support", "price"])
    report = json.loads((run_dir / "cluster_report.json").read_text())
    assert report["parameters"]["eps"]["source"] == "knee of the k-distance curve"
    assert report["parameters"]["eps"]["candidates"] == []
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["parameters"]["eps"] == "knee"


def planted_vectors(texts: dict[str, str], dimensions: int) -> dict[str, list[float]]:
    """Tight random directions around one centre per planted topic, and a random direction per one-off rule."""
    rng = np.random.default_rng(7)
    centres = {topic: rng.normal(size=dimensions) for topic in PLANTED}
    vectors = {}
    for rule_id, text in sorted(texts.items()):
        topic = topic_of(rule_id)
        base = centres[topic] if topic in centres else rng.normal(size=dimensions)
        vector = base + 0.15 * rng.normal(size=dimensions)
        vectors[text] = [round(float(value), 6) for value in vector]
    return vectors


def test_gemini_auto_eps_recovers_planted_topics(tmp_path: Path) -> None:
    run_dir = run_dir_with_extract(tmp_path)
    normalised = normalised_rules(run_dir)
    texts = {rule["id"]: rule_text(rule) for rule in normalised["rules"]}
    server = GeminiServer([], embeddings=planted_vectors(texts, 16)).start()
    cache = CallCache(tmp_path / "calls.sqlite")
    try:
        settings = GeminiSettings(base_url=server.url, max_attempts=2, timeout=10.0)
        client = GeminiClient(settings, cache, api_key="test-key")
        embedder = GeminiRuleEmbedder(GeminiEmbedder(client, dimensions=16))
        clustered = cluster(normalised, LABELS, embedder, ClusterSettings(), run_dir)
    finally:
        cache.close()
        server.stop()
    assert sorted(server.embedded) == sorted(texts.values())
    assert_planted_recovered(run_dir, list(PLANTED))
    assert sorted(entry["id"] for entry in json.loads((run_dir / "cluster_report.json").read_text())["noise"]) == [
        "t16",
        "t30",
    ]
    assert clustered["embedder"]["name"] == "gemini"


def test_gemini_auto_eps_on_narrow_distances(tmp_path: Path) -> None:
    run_dir = run_dir_with_extract(tmp_path)
    normalised = normalised_rules(run_dir)
    server = GeminiServer([], embeddings=load_embeddings(NARROW_EMBEDDINGS)).start()
    cache = CallCache(tmp_path / "calls.sqlite")
    try:
        settings = GeminiSettings(base_url=server.url, max_attempts=2, timeout=10.0)
        client = GeminiClient(settings, cache, api_key="test-key")
        embedder = GeminiRuleEmbedder(GeminiEmbedder(client, dimensions=32))
        clustered = cluster(normalised, LABELS, embedder, ClusterSettings(), run_dir)
    finally:
        cache.close()
        server.stop()
    assert len(server.embedded) == 30
    assert_planted_recovered(run_dir, list(PLANTED))
    assert clustered["parameters"]["eps"]["eps"] < 0.2


def label_of_sentiment_rule(rule_id: str) -> str:
    return "positive" if rule_id <= "t16" else "negative"


@pytest.mark.model
def test_minilm_auto_eps_and_kmeans(tmp_path: Path) -> None:
    from pldc.cluster import MiniLMEmbedder

    embedder = MiniLMEmbedder()
    dbscan_dir = run_dir_with_extract(tmp_path, "dbscan")
    build_in(dbscan_dir, embedder)
    report = json.loads((dbscan_dir / "cluster_report.json").read_text())
    assert EPS_MIN < report["parameters"]["eps"]["eps"] < EPS_MAX
    clusters = clusters_of(dbscan_dir)
    for members in clusters:
        assert len({label_of_sentiment_rule(member) for member in members}) == 1, members
    for label in LABELS:
        assert sum(1 for members in clusters if label_of_sentiment_rule(members[0]) == label) >= 2, label
    assert len(report["noise"]) <= 3
    # The negative topics lie far enough apart in MiniLM space for DBSCAN to keep them whole and apart.
    # The positive "performance" and "design" rules chain together at every eps that clusters them.
    for topic in ("defect", "price"):
        assert PLANTED[topic] in clusters, topic
    assert any(PLANTED["recommend"] == [m for m in members if m not in ONE_OFF] for members in clusters)
    # The k-distance knee chains every positive rule into one cluster.
    knee_dir = run_dir_with_extract(tmp_path, "knee")
    build_in(knee_dir, embedder, settings=ClusterSettings(eps_rule="knee"))
    assert [member for member in ALL_IDS if member <= "t16"] in clusters_of(knee_dir)
    # k-means has no noise, so the one-off rules join the nearest topic; every topic stays whole and apart.
    kmeans_dir = run_dir_with_extract(tmp_path, "kmeans")
    build_in(kmeans_dir, embedder, settings=ClusterSettings(method="kmeans"))
    for members in clusters_of(kmeans_dir):
        topics = {topic_of(member) for member in members if member not in ONE_OFF}
        assert len(topics) <= 1, members
    for topic in PLANTED:
        assert any(set(PLANTED[topic]) <= set(members) for members in clusters_of(kmeans_dir)), topic


# ---- the command line ----------------------------------------------------------------


def test_distill_without_stage_prints_help() -> None:
    result = run_pldc("distill")
    assert result.returncode == 0
    assert "extract" in result.stdout
    assert "build" in result.stdout


def test_build_command_writes_ruleset(tmp_path: Path) -> None:
    run_dir = run_dir_with_extract(tmp_path)
    output = tmp_path / "rules.pld"
    result = run_pldc("distill", "build", str(TASK), "--run-dir", str(run_dir), "-o", str(output), "--eps", "0.5")
    assert result.returncode == 0, result.stderr
    assert output.is_file()
    assert "wrote" in result.stdout
    assert check_file(output).diagnostics == []


def test_build_command_knee_eps(tmp_path: Path) -> None:
    run_dir = run_dir_with_extract(tmp_path)
    result = run_pldc("distill", "build", str(TASK), "--run-dir", str(run_dir), "--eps", "knee")
    assert result.returncode == 0, result.stderr
    clustering = load_ruleset(run_dir / "ruleset.pld").ruleset.meta_value("clustering") or ""
    assert "(knee of the k-distance curve)" in clustering
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["parameters"]["eps"] == "knee"


def test_build_command_without_extract_fails(tmp_path: Path) -> None:
    result = run_pldc("distill", "build", str(TASK), "--run-dir", str(tmp_path))
    assert result.returncode == 3
    assert "extract.jsonl: not found" in result.stderr


def test_build_command_rejects_bad_eps(tmp_path: Path) -> None:
    result = run_pldc("distill", "build", str(TASK), "--run-dir", str(tmp_path), "--eps", "wide")
    assert result.returncode == 2
    assert "--eps 'wide'" in result.stderr


def test_build_command_gemini_embedder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run_dir = run_dir_with_extract(tmp_path)
    texts = {rule["id"]: rule_text(rule) for rule in normalised_rules(run_dir)["rules"]}
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    server = GeminiServer([], embeddings=planted_vectors(texts, 768)).start()
    try:
        result = run_pldc(
            "distill", "build", str(TASK), "--run-dir", str(run_dir), "--embedder", "gemini", "--base-url", server.url
        )
    finally:
        server.stop()
    assert result.returncode == 0, result.stderr
    assert_planted_recovered(run_dir, list(PLANTED))
    ruleset = load_ruleset(run_dir / "ruleset.pld").ruleset
    assert (ruleset.meta_value("embedder") or "").startswith("gemini (dimensions 768")
    assert len(ruleset.rules) == 8


# ---- resolution -----------------------------------------------------------------------


def draft(rule_id: str, label: str, literals: dict[str, bool], support: int) -> DraftRule:
    return DraftRule(
        id=rule_id,
        label=label,
        title=rule_id,
        rationale="hand-made",
        literals=[{"feature": name, "value": value} for name, value in sorted(literals.items())],
        examples=[f"{rule_id}-{number}" for number in range(support)],
        support=support,
        matches=support,
        teachers=["teacher"],
    )


@pytest.mark.parametrize("hit", ["first", "priority"])
def test_resolve_merges_orders_and_allows(tmp_path: Path, hit: str) -> None:
    task = load_ruleset(TASK).ruleset.task
    assert task is not None
    task = task.model_copy(update={"hit": ast.Name(value=hit)})
    features = [
        {"name": name, "type": "bool", "values": [], "definition": name}
        for name in ("praises_design", "complains_support", "recommends")
    ]
    rules = [
        draft("positive_1", "positive", {"praises_design": True}, 5),
        draft("negative_1", "negative", {"praises_design": True, "complains_support": True}, 2),
        draft("positive_2", "positive", {"praises_design": True, "recommends": True}, 1),
        draft("positive_3", "positive", {"praises_design": True}, 1),
    ]
    header = BuildHeader("teacher", "embedded", "data.jsonl", "train", "tfidf", "dbscan")
    text, resolution = resolve_rules(header, task, features, rules, str(tmp_path / "out.pld"))
    assert sorted(resolution.merged) == [("positive_2", "positive_1"), ("positive_3", "positive_1")]
    assert resolution.overrides == [("positive_1", "negative_1")]
    assert resolution.allowed == [("shadowed", "negative_1")]
    checked = check_source(text, "out.pld")
    assert checked.diagnostics == []
    analysis = analyze(checked.ruleset, checked.ordered, checked.priorities)
    assert [finding.kind for finding, level in analysis.findings if level != "info"] == []
    [keeper, shadowed] = checked.ruleset.rules
    assert keeper.support == 7
    # positive_3 duplicates the keeper, so its member matches the keeper's condition; positive_2's does not.
    assert keeper.confidence == pytest.approx(6 / 7, abs=1e-4)
    assert len(keeper.examples) == 7
    assert [allowance.kind.value for allowance in shadowed.allows] == ["shadowed"]


# ---- real extracted rules ---------------------------------------------------------------

# Up to three records per distinct rule text of the recorded ContractNLI extraction
# (rulesets/teacher/contract_nli), Entailment and NotMentioned only, with each rationale cut to
# its first sentence. The hypothesis id ends the example id, and each hypothesis is one clause
# topic. Two families of hypotheses are about the same clause, so their rules may share a cluster:
# who may receive the information (nda-5, nda-7) and returning or keeping copies (nda-16, nda-17, nda-20).
CONTRACT_TASK = DISTILL / "contract_nli_task.pld"
CONTRACT_EXTRACT = DISTILL / "extract_contract_nli.jsonl"
CONTRACT_LABELS = ["Entailment", "Contradiction", "NotMentioned"]
SAME_CLAUSE = [{"nda-5", "nda-7"}, {"nda-16", "nda-17", "nda-20"}]


def clause_topic(rule_id: str) -> str:
    hypothesis = rule_id.rsplit("/", 1)[1]
    return next((min(family) for family in SAME_CLAUSE if hypothesis in family), hypothesis)


def cluster_contract_rules(tmp_path: Path, embedder: Embedder) -> tuple[list[list[str]], dict[str, Any]]:
    run_dir = tmp_path / "contract"
    run_dir.mkdir()
    shutil.copy(CONTRACT_EXTRACT, run_dir / "extract.jsonl")
    records = list(ExtractStore(run_dir).records.values())
    normalised = normalise(records, load_ruleset(CONTRACT_TASK).ruleset.features, run_dir)
    cluster(normalised, CONTRACT_LABELS, embedder, ClusterSettings(), run_dir)
    report = json.loads((run_dir / "cluster_report.json").read_text())
    return clusters_of(run_dir), report


def assert_clause_topics_apart(clusters: list[list[str]], report: dict[str, Any]) -> None:
    rules = sum(entry["rules"] for entry in report["per_label"].values())
    assert rules == 106
    assert len(report["noise"]) <= rules // 4, report["noise"]
    for label, entry in report["per_label"].items():
        if entry["rules"]:
            assert entry["clusters"] - entry["noise"] >= 10, (label, entry)
    for members in clusters:
        assert len({clause_topic(member) for member in members}) == 1, f"cluster mixes clauses: {members}"


def test_tfidf_auto_eps_keeps_contract_clauses_apart(tmp_path: Path) -> None:
    clusters, report = cluster_contract_rules(tmp_path, TfidfEmbedder())
    assert_clause_topics_apart(clusters, report)


@pytest.mark.model
def test_minilm_auto_eps_keeps_contract_clauses_apart(tmp_path: Path) -> None:
    from pldc.cluster import MiniLMEmbedder

    clusters, report = cluster_contract_rules(tmp_path, MiniLMEmbedder())
    assert_clause_topics_apart(clusters, report)
