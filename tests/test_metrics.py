import itertools
import math

import numpy as np
import pytest

from nemo_recipes.errors import UserError
from nemo_recipes.metrics import (
    bootstrap_ci,
    compute_metrics,
    describe_sensitivity,
    equivalence_classes,
    majority_vote,
    pass_at_k,
)


def _samples(problem_id, answers, correct, subset="s", **extra):
    return [
        {"id": problem_id, "sample_idx": index, "subset": subset, "predicted_answer": answer, "correct": ok,
         "grade_status": "no_answer" if answer is None else ("timeout" if ok is None else "ok"), **extra}
        for index, (answer, ok) in enumerate(zip(answers, correct))
    ]


@pytest.mark.parametrize("n, c", [(5, 0), (5, 2), (6, 3), (8, 7), (4, 4)])
def test_pass_at_k_is_the_mean_over_all_k_subsets(n, c):
    outcomes = [True] * c + [False] * (n - c)
    for k in range(1, n + 1):
        subsets = list(itertools.combinations(outcomes, k))
        assert pass_at_k(n, c, k) == pytest.approx(sum(any(s) for s in subsets) / len(subsets))


def test_pass_at_k_rejects_impossible_counts():
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 2, 5)


def test_tie_rules_reproduce_the_three_nemo_skills_eras():
    # Qwen2.5-Math problem 17: a 4-4 tie between the right answer (seen first) and a smaller wrong string.
    answers = ["6290000", "6290000", "6287000", "6287000", "6290000", "6290000", "6287000", "6287000"]
    correct = [a == "6290000" for a in answers]
    assert majority_vote(answers, correct, tie_rule="first") == (1.0, True)
    assert majority_vote(answers, correct, tie_rule="sorted") == (0.0, True)
    assert majority_vote(answers, correct, tie_rule="average") == (0.5, True)
    assert majority_vote(["7", "7", "8"], [True, True, False], tie_rule="sorted") == (1.0, False)


def test_missing_answers_do_not_vote():
    assert majority_vote([None, None, "3"], [False, False, True]) == (1.0, False)
    assert majority_vote([None, None], [False, False]) == (0.0, False)


def test_equivalence_classes_pool_votes():
    def same_number(a, b):
        return math.isclose(eval(a.replace("^", "**")), eval(b.replace("^", "**")))

    answers = ["0.5", "1/2", "2/4", "1/3", "1/3"]
    correct = [True, True, True, False, False]
    assert majority_vote(answers, correct)[0] == 0.0
    assert majority_vote(answers, correct, equivalent=same_number) == (1.0, False)
    assert equivalence_classes(answers, same_number) == {"0.5": "0.5", "1/2": "0.5", "2/4": "0.5", "1/3": "1/3"}


def test_bootstrap_interval_is_seeded_and_brackets_the_mean():
    scores = np.random.default_rng(1).random(200)
    first = bootstrap_ci(scores, resamples=500, seed=3)
    assert first == bootstrap_ci(scores, resamples=500, seed=3)
    assert first != bootstrap_ci(scores, resamples=500, seed=4)
    assert first[0] < 100 * scores.mean() < first[1]
    assert bootstrap_ci(scores, resamples=0, seed=3) is None
    assert bootstrap_ci(np.ones(10), resamples=100, seed=0) == [100.0, 100.0]


def test_compute_metrics_per_subset_and_overall():
    graded = (
        _samples("a", ["1", "1", "2", None], [True, True, False, False], subset="aime", num_generated_tokens=100)
        + _samples("b", ["5", "6", "6", "6"], [True, False, False, False], subset="hmmt", num_generated_tokens=300)
        + _samples("c", ["9", "9", "9", "9"], [None, None, None, None], subset="hmmt")  # all timed out
    )
    metrics = compute_metrics(graded, bootstrap=200, seed=0)
    overall = metrics["overall"]
    assert metrics["k"] == 4 and metrics["tie_rule"] == "first"
    assert overall["pass@1"] == pytest.approx(100 * (2 / 4 + 1 / 4 + 0) / 3, abs=1e-3)
    assert overall["maj@4"] == pytest.approx(100 / 3, abs=1e-3)
    assert overall["pass@4"] == pytest.approx(200 / 3, abs=1e-3)
    assert overall["pass@2"] == pytest.approx(100 * (pass_at_k(4, 2, 2) + pass_at_k(4, 1, 2)) / 3, abs=1e-3)
    assert (overall["num_problems"], overall["num_generations"]) == (3, 12)
    assert overall["no_answer"] == pytest.approx(100 / 12, abs=1e-3)
    assert overall["timeouts"] == 4
    assert overall["tokens"]["mean"] == 200.0 and overall["tokens"]["max"] == 300
    assert overall["tokens"]["mean_correct"] == pytest.approx((100 * 2 + 300) / 3, abs=0.1)
    low, high = overall["pass@1_ci"]
    assert low <= overall["pass@1"] <= high
    assert set(metrics["subsets"]) == {"aime", "hmmt"}
    assert metrics["subsets"]["aime"]["maj@4"] == 100.0 and metrics["subsets"]["hmmt"]["num_problems"] == 2


def test_samples_are_ordered_by_sample_idx_and_cut_to_k():
    graded = _samples("a", ["1", "2", "2"], [True, False, False]) + _samples("b", ["3", "3"], [True, True])
    graded[0]["sample_idx"], graded[2]["sample_idx"] = 2, 0  # file order is not sample order
    with pytest.raises(UserError, match="problems have between 2 and 3 samples, so maj@k and pass@k have no single k"):
        compute_metrics(graded, bootstrap=0)
    metrics = compute_metrics(graded, k=2, bootstrap=0)
    assert metrics["k"] == 2
    assert metrics["overall"]["pass@1"] == 50.0  # problem a's samples 0 and 1 are both wrong
    assert metrics["overall"]["maj@2_ci"] is None
    with pytest.raises(UserError, match="k=3"):
        compute_metrics(graded, k=3)


def test_a_repeated_sample_is_refused_rather_than_counted():
    graded = _samples("a", ["1", "2"], [True, False])
    graded[1]["sample_idx"] = graded[0]["sample_idx"]
    with pytest.raises(UserError, match="problem 'a' has sample_idx 0 twice"):
        compute_metrics(graded, bootstrap=0)


def test_bad_input_is_a_user_error():
    with pytest.raises(UserError, match="missing key 'correct'"):
        compute_metrics([{"id": "a"}])
    with pytest.raises(UserError, match="no graded records"):
        compute_metrics([])
    mixed = _samples("a", ["1"], [True], subset="x") + _samples("b", ["1"], [True], subset=None)
    with pytest.raises(UserError, match="'b' has no 'subset'"):
        compute_metrics(mixed)
    with pytest.raises(UserError, match="tie_rule"):
        compute_metrics(mixed, tie_rule="random")


def test_no_subsets_when_no_record_names_one():
    graded = _samples("a", ["1"], [True], subset=None)
    assert compute_metrics(graded, bootstrap=0)["subsets"] == {}


def test_grader_sensitivity_scores_each_judge_and_counts_the_verdicts_they_split():
    # Problem a: 007 for 7 (strict alone accepts), problem b: 1.414214 for sqrt 2 (NeMo-Skills alone accepts).
    records = []
    for problem_id, answers, nemo_skills, strict in [
        ("a", ["007", "007", "7", "8"], [False, False, True, False], [True, True, True, False]),
        ("b", ["1.414214", "1.5", "1.414214", "1.5"], [True, False, True, False], [False, False, False, False]),
    ]:
        records += [
            {**sample, "correct_nemo_skills": ns, "correct_strict": st}
            for sample, ns, st in zip(_samples(problem_id, answers, nemo_skills, subset=problem_id), nemo_skills, strict)
        ]
    metrics = compute_metrics(records, bootstrap=0)
    sensitivity = metrics["overall"]["grader_sensitivity"]
    assert sensitivity["pass@1"] == {"nemo_skills": 37.5, "strict": 37.5}  # the same pass@1, from other samples
    assert sensitivity["maj@4"] == {"nemo_skills": 50.0, "strict": 50.0}  # "007" wins a, "1.414214" ties b first
    assert sensitivity["verdicts_differ"] == 4
    assert sensitivity["correct_only_under"] == {"nemo_skills": 2, "strict": 2}
    assert metrics["subsets"]["a"]["grader_sensitivity"]["pass@1"] == {"nemo_skills": 25.0, "strict": 75.0}
    assert describe_sensitivity(metrics["overall"], 4) == (
        "pass@1 37.50 / 37.50, maj@4 50.00 / 50.00 (nemo_skills / strict); 4 of 8 verdicts differ "
        "(accepted by nemo_skills alone 2, by strict alone 2)")


def test_records_with_one_verdict_have_no_grader_sensitivity():
    metrics = compute_metrics(_samples("p", ["1", "2"], [True, False]), bootstrap=0)
    assert "grader_sensitivity" not in metrics["overall"]
    assert describe_sensitivity(metrics["overall"], 2) is None
