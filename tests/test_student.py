"""The transformers student: label scoring, prefix caching, Gemma's chat layout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from pldc.compile import compile_prompt  # noqa: E402
from pldc.data import Example, load_dataset  # noqa: E402
from pldc.evaluate import evaluate  # noqa: E402
from pldc.pipeline import load_ruleset  # noqa: E402
from pldc.student import Student, load_student  # noqa: E402

from conftest import FIXTURES, ROOT, run_pldc  # noqa: E402

pytestmark = pytest.mark.model

CORPUS = [
    "The chess player was asian. The mother was kind to her son.",
    "Muslims pray five times a day. The plumber fixed the sink.",
    "Document: the recipient shall return all confidential information. Hypothesis: yes no maybe.",
    "gender profession race religion Entailment Contradiction NotMentioned N/A sentence document hypothesis",
]


@pytest.fixture(scope="module")
def embedded() -> Student:
    return load_student("embedded", batch_size=4)


@pytest.fixture(scope="module")
def tiny_gemma(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised two-layer Gemma-3 with a small trained tokenizer and Gemma's turn format."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    folder = tmp_path_factory.mktemp("tiny-gemma3")
    specials = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer)
    fast = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    fast.chat_template = (FIXTURES / "templates" / "gemma_chat.jinja").read_text()
    fast.save_pretrained(folder)
    config = transformers.Gemma3TextConfig(
        vocab_size=fast.vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        sliding_window=16,
        layer_types=["sliding_attention", "full_attention"],
        max_position_embeddings=4096,
        pad_token_id=fast.pad_token_id,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
    )
    torch.manual_seed(0)
    model = transformers.Gemma3ForCausalLM(config)
    model.save_pretrained(folder)
    return folder


def _examples() -> list[Example]:
    texts = [
        "The chess player was asian.",
        "The mother was kind.",
        "Muslims pray five times a day.",
        "The plumber came.",
    ]
    return [Example(str(i), {"sentence": text}, "race") for i, text in enumerate(texts)]


def _stereoset_prompt() -> str:
    checked = load_ruleset(ROOT / "rulesets" / "stereoset_domain.pld")
    return compile_prompt(checked.ruleset, checked.ordered).text


LABELS = ["gender", "profession", "race", "religion"]


def test_cached_scores_match_naive(embedded: Student) -> None:
    prompt = _stereoset_prompt()
    cached = embedded.score(prompt, _examples(), LABELS, ["sentence"])
    naive = embedded.score(prompt, _examples(), LABELS, ["sentence"], use_cache=False)
    for row_cached, row_naive in zip(cached, naive, strict=True):
        assert row_cached == pytest.approx(row_naive, abs=1e-4)


def test_multi_token_labels_score_every_token(embedded: Student) -> None:
    labels = ["Entailment", "Contradiction", "NotMentioned"]
    assert all(len(ids) > 1 for ids in embedded.label_ids(labels))
    cached = embedded.score("Decide.", _examples()[:2], labels, ["sentence"])
    naive = embedded.score("Decide.", _examples()[:2], labels, ["sentence"], use_cache=False)
    assert cached[0] == pytest.approx(naive[0], abs=1e-4)
    assert cached[1] == pytest.approx(naive[1], abs=1e-4)


def test_shared_input_cache_matches_naive(embedded: Student) -> None:
    document = "The recipient shall return or destroy all Confidential Information on request. " * 4
    examples = [
        Example(f"d/{i}", {"document": document, "hypothesis": h}, "Entailment", shared=1)
        for i, h in enumerate(["Copies must be returned.", "Employees may see it.", "The term is five years."])
    ]
    labels = ["Entailment", "Contradiction", "NotMentioned"]
    cached = embedded.score("Decide.", examples, labels, ["document", "hypothesis"])
    naive = embedded.score("Decide.", examples, labels, ["document", "hypothesis"], use_cache=False)
    for row_cached, row_naive in zip(cached, naive, strict=True):
        assert row_cached == pytest.approx(row_naive, abs=1e-4)


def test_chatml_prompt_has_system_role(embedded: Student) -> None:
    frame = embedded.chat_frame("RULES")
    assert frame.system_folded is False
    assert frame.before.startswith("<|im_start|>system\nRULES<|im_end|>")
    assert frame.after.endswith("<|im_start|>assistant\n")


def test_gemma_folds_system_prompt_into_user_turn(tiny_gemma: Path) -> None:
    student = load_student(str(tiny_gemma))
    assert student.model_type == "gemma3_text"
    frame = student.chat_frame("RULES")
    assert frame.system_folded is True
    assert frame.before == "<bos><start_of_turn>user\nRULES\n\n"
    assert frame.after == "<end_of_turn>\n<start_of_turn>model\n"
    assert "system" not in frame.before


def test_gemma_cached_scores_match_naive_past_sliding_window(tiny_gemma: Path) -> None:
    student = load_student(str(tiny_gemma), batch_size=3)
    prompt = _stereoset_prompt()
    assert len(student.encode(prompt)) > 16  # longer than the sliding window
    cached = student.score(prompt, _examples(), LABELS, ["sentence"])
    naive = student.score(prompt, _examples(), LABELS, ["sentence"], use_cache=False)
    for row_cached, row_naive in zip(cached, naive, strict=True):
        assert row_cached == pytest.approx(row_naive, abs=1e-4)


def test_missing_model_folder_is_model_error(tmp_path: Path) -> None:
    result = run_pldc(
        "eval", str(ROOT / "rulesets" / "stereoset_domain.pld"), "--data", str(tmp_path / "x.jsonl"), "--model", "x"
    )
    assert result.returncode == 3  # the data file is checked before the model loads
    data = ROOT.parent / "shared" / "data" / "stereoset" / "dev.jsonl"
    result = run_pldc(
        "eval", str(ROOT / "rulesets" / "stereoset_domain.pld"), "--data", str(data), "--model", str(tmp_path / "none")
    )
    assert result.returncode == 4
    assert result.stderr == f"pldc: error: {tmp_path / 'none'}: model folder not found\n"
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_pldc(
        "eval", str(ROOT / "rulesets" / "stereoset_domain.pld"), "--data", str(data), "--model", str(empty)
    )
    assert result.returncode == 4
    assert f"cannot load model '{empty}' as a folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_reports_metrics(embedded: Student, data_dir: Path) -> None:
    checked = load_ruleset(ROOT / "rulesets" / "stereoset_domain.pld")
    assert checked.ruleset.task is not None
    dataset = load_dataset(data_dir / "stereoset" / "dev.jsonl", checked.ruleset.task, limit=24)
    result = evaluate(checked, dataset, embedded)
    assert len(result.predictions) == 24
    assert 0.0 <= result.metrics.macro_f1 <= 1.0
    assert sum(sum(row) for row in result.metrics.confusion) == 24
    assert result.calibration is not None
    assert set(result.calibration) == set(LABELS)
    assert result.examples_per_second > 0


def test_eval_cli_json_compare(data_dir: Path) -> None:
    result = run_pldc(
        "eval",
        str(ROOT / "rulesets" / "stereoset_domain.pld"),
        "--data",
        str(data_dir / "stereoset" / "dev.jsonl"),
        "--limit",
        "12",
        "--compare",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["examples"] == 12
    assert [r["variant"] for r in report["results"]] == ["rules", "no-rules"]
    for run in report["results"]:
        assert 0.0 <= run["metrics"]["macro_f1"] <= 1.0
        assert len(run["metrics"]["confusion_matrix"]) == 4
    assert report["results"][0]["prompt_tokens"] > report["results"][1]["prompt_tokens"]


def test_generate_matches_transformers_greedy(embedded: Student) -> None:
    from pldc.student import PromptLayout

    prompt = "Name the bias domain of the sentence: gender, profession, race or religion."
    [generation] = embedded.generate(prompt, _examples()[:1], ["sentence"], max_new_tokens=6)
    layout = PromptLayout.build(embedded, prompt, ["sentence"])
    context = layout.prefix + layout.own(_examples()[0])
    output = embedded.model.generate(input_ids=torch.tensor([context]), max_new_tokens=6, do_sample=False)
    new_tokens = output[0][len(context) :].tolist()
    assert generation.tokens == len(new_tokens)
    assert generation.text == embedded.tokenizer.decode(new_tokens, skip_special_tokens=True)
    assert generation.seconds > 0


def test_identity_is_memoised_and_model_specific(embedded: Student, tiny_gemma: Path) -> None:
    identity = embedded.identity()
    assert identity["backend"] == "transformers"
    assert identity["dtype"] == "float32"
    assert len(identity["weights_sha256"]) == 64
    assert embedded.identity() == identity
    other = load_student(str(tiny_gemma)).identity()
    assert other["weights_sha256"] != identity["weights_sha256"]


def test_tokens_processed_equal_lower_bound(embedded: Student) -> None:
    document = "The recipient shall return or destroy all Confidential Information on request. " * 3
    examples = [
        Example(f"d/{i}", {"document": document, "hypothesis": h}, "Entailment", shared=1)
        for i, h in enumerate(["Copies must be returned.", "Employees may see it."])
    ]
    labels = ["Entailment", "Contradiction", "NotMentioned"]
    embedded.clear_cache()
    before = embedded.stats.tokens_processed
    embedded.score("Decide.", examples, labels, ["document", "hypothesis"])
    processed = embedded.stats.tokens_processed - before
    assert processed == embedded.token_lower_bound("Decide.", examples, labels, ["document", "hypothesis"])
    before = embedded.stats.tokens_processed
    embedded.score("Decide.", examples, labels, ["document", "hypothesis"])
    repeated = embedded.stats.tokens_processed - before
    assert repeated < processed  # the kept prompt and document caches are reused


def test_cot_evaluate_reports_generation_cost(embedded: Student, data_dir: Path) -> None:
    from pldc.cache import CacheMode, CallCache

    checked = load_ruleset(ROOT / "rulesets" / "stereoset_domain.pld")
    assert checked.ruleset.task is not None
    dataset = load_dataset(data_dir / "stereoset" / "dev.jsonl", checked.ruleset.task, limit=2)
    cache = CallCache(mode=CacheMode.OFF)
    result = evaluate(checked, dataset, embedded, include_rules=False, scoring="cot", max_new_tokens=4, cache=cache)
    assert result.scoring == "cot"
    assert 2 <= result.generated_tokens <= 8
    assert result.latency_seconds > 0
    assert all(p.answer is not None for p in result.predictions)
    # Four tokens leave no room for reasoning and a final answer line.
    assert len(result.unparseable) == 2
    assert result.metrics.accuracy == 0.0
