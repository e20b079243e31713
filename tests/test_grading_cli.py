import json
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_recipes.grading.cli import main
from nemo_recipes.io import read_jsonl

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _run(argv: list[str], capsys) -> tuple[int, dict | None, str]:
    status = main(argv + ["--no-progress", "--bootstrap", "200"])
    captured = capsys.readouterr()
    last = captured.out.strip().splitlines()[-1] if captured.out.strip() else None
    return status, (json.loads(last) if last else None), captured.err


def test_lists_of_samples_are_graded_per_sample_and_summarised_per_subset(tmp_path, capsys):
    source = _write(
        tmp_path / "in.jsonl",
        [
            {"id": "a", "subset_for_metrics": "aime", "expected_answer": "5",
             "generation": ["\\boxed{5}", "\\boxed{5}", "\\boxed{4}", "no box"],
             "num_generated_tokens": [10, 20, 30, 40]},
            {"id": "b", "subset_for_metrics": "hmmt", "expected_answer": "\\frac{1}{2}",
             "generation": ["\\boxed{0.5}", "\\boxed{1/3}", "\\boxed{1/3}", "\\boxed{\\frac12}"]},
        ],
    )
    status, summary, _ = _run([str(source), "--output", str(tmp_path / "out.jsonl")], capsys)
    assert status == 0
    assert summary["k"] == 4 and summary["num_problems"] == 2 and summary["num_generations"] == 8
    assert summary["pass@1"] == pytest.approx(100 * (2 / 4 + 2 / 4) / 2)
    # Problem b: "1/3" twice is the majority by exact strings, although 0.5 and \frac12 are the same number.
    assert summary["maj@4"] == 50.0
    assert summary["no_answer"] == pytest.approx(100 / 8)
    assert summary["timeouts"] == 0
    assert set(summary["subsets"]) == {"aime", "hmmt"}
    assert summary["subsets"]["aime"]["maj@4"] == 100.0 and summary["subsets"]["hmmt"]["maj@4"] == 0.0
    assert summary["versions"]["math-verify"] == "0.9.0"
    graded = read_jsonl(tmp_path / "out.jsonl")
    assert graded[0]["predicted_answer"] == ["5", "5", "4", None]
    assert graded[0]["correct"] == [True, True, False, False]
    assert graded[0]["grade_status"] == ["ok", "ok", "ok", "no_answer"]
    assert graded[0]["num_generated_tokens"] == [10, 20, 30, 40]


def test_both_judges_are_printed_and_the_chosen_one_sets_correct(tmp_path, capsys):
    source = _write(
        tmp_path / "in.jsonl",
        [{"id": "aime", "expected_answer": "7", "generation": ["\\boxed{007}", "\\boxed{7}", "\\boxed{8}"]},
         {"id": "hmmt", "expected_answer": "\\sqrt{2}",
          "generation": ["\\boxed{1.414214}", "\\boxed{\\sqrt{2}}", "\\boxed{1.414214}"]}],
    )
    status, summary, err = _run([str(source), "--output", str(tmp_path / "out.jsonl")], capsys)
    assert status == 0 and summary["judge"] == "nemo_skills"
    assert summary["pass@1"] == pytest.approx(100 * (1 / 3 + 3 / 3) / 2)
    sensitivity = summary["grader_sensitivity"]
    assert sensitivity["pass@1"] == {"nemo_skills": pytest.approx(100 * 4 / 6), "strict": pytest.approx(100 * 3 / 6)}
    assert sensitivity["maj@3"] == {"nemo_skills": 50.0, "strict": 50.0}  # 007 and 1.414214 win their votes
    assert sensitivity["verdicts_differ"] == 3
    assert sensitivity["correct_only_under"] == {"nemo_skills": 2, "strict": 1}
    assert "by judge: pass@1 66.67 / 50.00, maj@3 50.00 / 50.00 (nemo_skills / strict); 3 of 6 verdicts differ" in err
    graded = read_jsonl(tmp_path / "out.jsonl")
    assert graded[0]["correct_nemo_skills"] == [False, True, False] and graded[0]["correct_strict"] == [True, True, False]
    assert graded[0]["judge"] == "nemo_skills" and graded[0]["correct"] == graded[0]["correct_nemo_skills"]

    status, summary, _ = _run([str(source), "--output", str(tmp_path / "strict.jsonl"), "--judge", "strict"], capsys)
    assert status == 0 and summary["judge"] == "strict" and summary["pass@1"] == pytest.approx(50.0)
    assert read_jsonl(tmp_path / "strict.jsonl")[1]["correct"] == [False, True, False]


def _read_only_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        (folder / "probe").touch()
    except PermissionError:
        return folder
    pytest.skip("this user writes into read-only folders (root): the /sys case covers it")


@pytest.mark.parametrize(
    "where, message",
    [
        (lambda tmp_path: tmp_path / "missing" / "out.jsonl", "/missing does not exist."),
        (lambda tmp_path: _read_only_folder(tmp_path) / "out.jsonl", "/read-only is not writable (Permission denied)."),
        # not even root may write there (the reason varies: EACCES, or EROFS in a container)
        (lambda tmp_path: Path("/sys/out.jsonl"), "the folder /sys is not writable ("),
        (lambda tmp_path: tmp_path, "it is a folder; give a file name."),
    ],
    ids=["missing folder", "read-only folder", "kernel folder", "a folder"],
)
def test_an_output_that_cannot_be_written_is_one_sentence_before_any_grading(tmp_path, capsys, monkeypatch, where,
                                                                            message):
    if str(where(tmp_path)).startswith("/sys") and not Path("/sys").is_dir():
        pytest.skip("no /sys here")
    source = _write(tmp_path / "in.jsonl", [{"expected_answer": "2", "generation": "\\boxed{2}"}])
    monkeypatch.setattr("nemo_recipes.grading.cli.compare_pairs", lambda *args, **kwargs: pytest.fail("graded"))
    for flags in (["--output", str(where(tmp_path))],
                  ["--output", str(tmp_path / "out.jsonl"), "--metrics-output", str(where(tmp_path))]):
        status, summary, err = _run([str(source), *flags, "--workers", "0"], capsys)
        assert status == 2 and summary is None
        assert err.startswith("error: cannot write ") and message in err
        assert len(err.strip().splitlines()) == 1


def test_a_write_failing_after_grading_is_one_sentence(tmp_path, capsys, monkeypatch):
    def disk_full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("nemo_recipes.grading.cli.write_extended_rows", disk_full)
    source = _write(tmp_path / "in.jsonl", [{"expected_answer": "2", "generation": "\\boxed{2}"}])
    status, summary, err = _run([str(source), "--output", str(tmp_path / "out.jsonl"), "--workers", "0"], capsys)
    assert status == 2 and summary is None
    assert err.strip() == f"error: cannot write {tmp_path / 'out.jsonl'}: No space left on device."


def test_equivalence_majority_pools_equal_answers(tmp_path, capsys):
    source = _write(
        tmp_path / "in.jsonl",
        [{"id": "b", "expected_answer": "\\frac{1}{2}",
          "generation": ["\\boxed{0.5}", "\\boxed{1/3}", "\\boxed{1/3}", "\\boxed{\\frac12}", "\\boxed{2/4}"]}],
    )
    status, summary, _ = _run(
        [str(source), "--output", str(tmp_path / "out.jsonl"), "--equivalence-majority"], capsys
    )
    assert status == 0
    assert summary["maj@5"] == 0.0  # "1/3" has two identical strings; each form of 1/2 has one
    assert summary["maj@5_equiv"] == 100.0  # three forms of 1/2 vote together


def test_one_sample_per_row_files_and_regrading_a_graded_file(tmp_path, capsys):
    rows = [
        {"id": "p", "sample_idx": index, "expected_answer": "3", "generation": f"\\boxed{{{answer}}}", "seed": index}
        for index, answer in enumerate(["3", "3", "2"])
    ]
    source = _write(tmp_path / "in.jsonl", rows)
    first, second = tmp_path / "graded.jsonl", tmp_path / "regraded.jsonl"
    assert _run([str(source), "--output", str(first)], capsys)[0] == 0
    status, summary, _ = _run([str(first), "--output", str(second)], capsys)
    assert status == 0 and summary["k"] == 3 and summary["maj@3"] == 100.0
    regraded = read_jsonl(second)
    assert [row["correct"] for row in regraded] == [True, True, False]
    assert [row["seed"] for row in regraded] == [0, 1, 2]
    assert read_jsonl(first) == regraded


def test_invalid_utf8_in_the_input_gives_valid_utf8_output(tmp_path, capsys):
    source = tmp_path / "in.jsonl"
    source.write_bytes(
        b'{"id": "a", "expected_answer": "5", "generation": "caf\xe9 \\\\boxed{5}"}\n'
        b'{"id": "b", "expected_answer": "5", "generation": "lone \\udcff surrogate \\\\boxed{5\\udcff}"}\n'
    )
    status, summary, _ = _run([str(source), "--output", str(tmp_path / "out.jsonl")], capsys)
    assert status == 0 and summary["num_generations"] == 2
    graded = read_jsonl(tmp_path / "out.jsonl")  # strict UTF-8 reader
    assert graded[0]["correct"] is True and graded[0]["generation"] == "caf\udce9 \\boxed{5}"
    assert graded[1]["predicted_answer"] == "5\udcff" and graded[1]["grade_status"] in ("ok", "parse_error")


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "file not found"),
        ('{"expected_answer": "1", "generation": "x"}\nnot json\n', ":2: not valid JSON"),
        ('{"expected_answer": "1"}\n', ":1: missing key 'generation'"),
        ('{"expected_answer": "1", "generation": 5}\n', ":1: 'generation' must be a string"),
        ('[1, 2]\n', ":1: expected a JSON object"),
        ('{"expected_answer": "1", "generation": "x"}\n{"expected_answer": null, "generation": "\\\\boxed{None}"}\n',
         "line 2: 'expected_answer' is null; every row needs a gold answer."),
    ],
)
def test_bad_input_is_one_sentence_and_exit_status_2(tmp_path, capsys, content, message):
    source = tmp_path / "in.jsonl"
    if content is not None:
        source.write_text(content)
    status, summary, err = _run([str(source), "--output", str(tmp_path / "out.jsonl")], capsys)
    assert status == 2 and summary is None
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out.jsonl").exists()


def test_one_row_per_sample_files_concatenated_per_seed_number_each_problems_samples(tmp_path, capsys):
    rows = [{"id": "p", "expected_answer": "2", "generation": f"\\boxed{{{answer}}}"} for answer in (2, 3, 2)]
    source = _write(tmp_path / "in.jsonl", rows)
    status, summary, _ = _run([str(source), "--output", str(tmp_path / "out.jsonl"), "--workers", "0"], capsys)
    assert status == 0 and summary["k"] == 3 and summary["maj@3"] == 100.0


def test_an_empty_reasoning_marker_is_refused_by_the_parser(tmp_path, capsys):
    source = _write(tmp_path / "in.jsonl", [{"expected_answer": "2", "generation": "\\boxed{2}"}])
    with pytest.raises(SystemExit) as exit_info:
        _run([str(source), "--output", str(tmp_path / "out.jsonl"), "--reasoning-end", ""], capsys)
    assert exit_info.value.code == 2 and "the marker must not be empty" in capsys.readouterr().err


def test_module_entry_point(tmp_path):
    source = _write(tmp_path / "in.jsonl", [{"gt": "2", "response": ["\\boxed{2}", "\\boxed{3}"]}])
    command = [sys.executable, "-m", "nemo_recipes.grading", str(source), "--output", str(tmp_path / "out.jsonl"),
               "--gold-key", "gt", "--generation-key", "response", "--workers", "0", "--no-progress"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["pass@1"] == 50.0 and summary["maj@2"] == 100.0  # a 1-1 tie goes to the first seen, "2"
    missing = subprocess.run(command[:3] + [str(tmp_path / "nope.jsonl")] + command[4:], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
