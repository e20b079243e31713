import collections
import functools
import hashlib
import http.server
import json
import threading
from pathlib import Path

import pytest

from nemo_recipes.data import comp_math
from nemo_recipes.errors import UserError
from nemo_recipes.grading import CompareSettings, compare_answers, extract_answer
from nemo_recipes.grading.strict import compare_strict

REAL_FILE = Path(__file__).resolve().parents[1].parent / "shared" / "research" / "data" / "comp-math-24-25.test.jsonl"
SYNTHETIC = [
    {"id": "aime24-0", "subset_for_metrics": "aime24", "problem": "p", "expected_answer": "7", "source": "aime24"},
    {"id": "hmmt_F_2025_guts_1", "subset_for_metrics": "hmmt-24-25", "problem": "q", "expected_answer": "$2\\pi$"},
]


@pytest.fixture
def synthetic_file(tmp_path, monkeypatch):
    """A small file standing in for test.txt, with the pinned hash pointed at it: tests the mechanics, not the data."""
    path = tmp_path / "served" / "test.txt"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(row) + "\n" for row in SYNTHETIC))
    monkeypatch.setattr(comp_math, "COMP_MATH_SHA256", hashlib.sha256(path.read_bytes()).hexdigest())
    return path


@pytest.fixture
def real_records():
    if not REAL_FILE.exists():
        pytest.skip(f"{REAL_FILE} is absent")
    return comp_math.load_comp_math(REAL_FILE)


def test_url_is_pinned_to_the_commit():
    assert comp_math.COMP_MATH_COMMIT in comp_math.COMP_MATH_URL
    assert comp_math.COMP_MATH_URL.startswith("https://raw.githubusercontent.com/NVIDIA/NeMo-Skills/")
    assert comp_math.COMP_MATH_URL.endswith("/nemo_skills/dataset/comp-math-24-25/test.txt")


def test_local_copy_becomes_our_problem_schema(synthetic_file):
    records = comp_math.load_comp_math(synthetic_file)
    assert [r["id"] for r in records] == ["aime24-0", "hmmt_F_2025_guts_1"]
    assert records[0]["subset"] == "aime24" and records[0]["subset_for_metrics"] == "aime24"
    assert records[0]["source"] == "aime24" and records[1]["expected_answer"] == "$2\\pi$"


def test_a_sha_mismatch_names_the_file_and_both_hashes(tmp_path):
    tampered = tmp_path / "test.txt"
    tampered.write_text(json.dumps(SYNTHETIC[0]) + "\n")
    actual = hashlib.sha256(tampered.read_bytes()).hexdigest()
    with pytest.raises(UserError) as error:
        comp_math.load_comp_math(tampered)
    message = str(error.value)
    assert str(tampered) in message and actual in message and comp_math.COMP_MATH_SHA256 in message


def test_download_from_a_file_url_is_cached(synthetic_file, tmp_path):
    cache = tmp_path / "cache"
    records = comp_math.load_comp_math(cache_dir=cache, url=synthetic_file.as_uri())
    assert len(records) == 2
    synthetic_file.unlink()  # a second load must not need the source any more
    assert comp_math.load_comp_math(cache_dir=cache, url=synthetic_file.as_uri()) == records
    assert list(cache.rglob("*.tmp")) == []


def test_download_over_http(synthetic_file, tmp_path):
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(synthetic_file.parent))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/test.txt"
        path = comp_math.fetch_comp_math(cache_dir=tmp_path / "cache", url=url)
        assert path.read_bytes() == synthetic_file.read_bytes()
        with pytest.raises(UserError, match="could not download"):
            comp_math.fetch_comp_math(cache_dir=tmp_path / "other", url=url.replace("test.txt", "missing.txt"))
    finally:
        server.shutdown()
        server.server_close()


def test_a_damaged_cache_is_downloaded_again_and_a_bad_download_refused(synthetic_file, tmp_path):
    cache = tmp_path / "cache"
    path = comp_math.fetch_comp_math(cache_dir=cache, url=synthetic_file.as_uri())
    path.write_text("damaged\n")
    assert comp_math.fetch_comp_math(cache_dir=cache, url=synthetic_file.as_uri()).read_bytes() == (
        synthetic_file.read_bytes()
    )
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("{}\n")
    with pytest.raises(UserError, match="sha256 is"):
        comp_math.fetch_comp_math(cache_dir=tmp_path / "fresh", url=wrong.as_uri())
    assert not list((tmp_path / "fresh").rglob("test.jsonl"))


def test_default_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("NEMO_RECIPES_CACHE", str(tmp_path))
    assert comp_math.default_cache_dir() == tmp_path
    monkeypatch.delenv("NEMO_RECIPES_CACHE")
    assert comp_math.default_cache_dir() == Path.home() / ".cache" / "nemo_recipes"


def test_the_real_file_has_the_published_composition(real_records):
    assert len(real_records) == 256
    assert collections.Counter(r["subset"] for r in real_records) == {"aime24": 30, "aime25": 30, "hmmt-24-25": 196}
    contests = collections.Counter(r["id"][:11] if r["id"].startswith("hmmt") else r["subset"] for r in real_records)
    assert contests == {"aime24": 30, "aime25": 30, "hmmt_N_2024": 62, "hmmt_F_2024": 68, "hmmt_F_2025": 66}
    assert all(isinstance(r["expected_answer"], str) for r in real_records)
    assert sum("reference_solution" in r for r in real_records) == 60


def test_every_gold_verifies_against_itself_except_the_listed_ones(real_records):
    """Through both judges, through math-verify alone, and boxed in a generation then extracted."""
    math_verify_only = CompareSettings(normalize=False)
    failing = set()
    for record in real_records:
        gold = record["expected_answer"]
        as_boxed = extract_answer(f"so the answer is \\boxed{{{gold.strip().rstrip('.').strip().strip('$')}}}.")
        verdicts = [
            compare_answers(gold, gold),
            compare_answers(gold, gold, math_verify_only),
            compare_answers(gold, as_boxed),
            compare_answers(gold, as_boxed, math_verify_only),
            compare_strict(gold, gold),
            compare_strict(gold, as_boxed),
        ]
        if any(verdict != (True, "ok") for verdict in verdicts):
            failing.add(record["id"])
    assert failing <= set(comp_math.GOLD_ISSUES)
    assert failing  # the prose golds do fail: the list is not decoration


def test_listed_issues_exist_and_wrong_golds_have_a_corrected_value(real_records):
    by_id = {r["id"]: r for r in real_records}
    assert set(comp_math.GOLD_ISSUES) <= set(by_id)
    for problem_id, issue in comp_math.GOLD_ISSUES.items():
        record = by_id[problem_id]
        assert issue.kind in ("wrong", "misparsed", "ungradable") and issue.reason
        corrected = comp_math.corrected_expected_answer(record)
        if issue.kind == "wrong":
            # A model that answers correctly is marked wrong by the published gold.
            assert compare_answers(record["expected_answer"], corrected) == (False, "ok")
            assert compare_answers(corrected, corrected) == (True, "ok")
        else:
            assert corrected == record["expected_answer"]
    assert comp_math.corrected_expected_answer(by_id["aime24-0"]) == by_id["aime24-0"]["expected_answer"]
    # The corrected cube-root gold is the real root: the numeric answer a model gives grades correct against it.
    assert compare_answers(comp_math.corrected_expected_answer(by_id["hmmt_F_2024_guts_32"]), "-1.333692") == (
        True, "ok")
