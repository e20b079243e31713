"""The stage engine: manifests, skip when complete, recompute (never delete) when config changes, the run lock,
stage selection, and failures that keep what was computed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nemo_recipes.cli import main
from nemo_recipes.config import compose_config
from nemo_recipes.errors import UserError
from nemo_recipes.pipeline import run_pipeline, stage_graph, stage_lock

COMP_MATH = Path(__file__).resolve().parents[1].parent / "shared" / "research" / "data" / "comp-math-24-25.test.jsonl"


def _cfg(tmp_path, *overrides):
    return compose_config([f"run_dir={tmp_path}/run", "progress=false", *overrides])


def _manifest(tmp_path, stage):
    return json.loads((tmp_path / "run" / stage / "manifest.json").read_text())


def test_stage_graph_orders_every_stage_after_what_it_needs():
    graph = stage_graph(compose_config([]))
    seen = set()
    for stage in graph:
        assert set(stage.needs) <= seen, stage.name
        seen.add(stage.name)
    assert [s.name for s in graph][:6] == ["prepare", "sample_teacher", "grade_teacher", "select", "pack", "sft"]
    assert {"sample_base", "sample_sft", "grade_base", "grade_sft", "metrics", "report"} <= seen


def test_complete_stage_is_skipped_and_manifest_records_provenance(tmp_path, capsys):
    run_pipeline(_cfg(tmp_path, "stages=[prepare]"), argv=["stages=[prepare]"])
    first = _manifest(tmp_path, "prepare")
    assert first["status"] == "complete" and first["summary"] == {"num_problems": 50, "num_benchmark": 48}
    assert first["argv"] == ["python", "-m", "nemo_recipes", "stages=[prepare]"]
    assert {"python", "nemo_recipes", "torch"} <= set(first["versions"])
    assert len(first["fingerprint"]) == 64 and first["started"] <= first["ended"]
    capsys.readouterr()
    run_pipeline(_cfg(tmp_path, "stages=[prepare]"))
    assert "[prepare] complete, skipping" in capsys.readouterr().out
    assert _manifest(tmp_path, "prepare")["fingerprint"] == first["fingerprint"]


def test_changed_config_moves_old_results_aside_and_recomputes(tmp_path, capsys):
    run_pipeline(_cfg(tmp_path, "stages=[prepare]"))
    old = (tmp_path / "run" / "prepare" / "benchmark.jsonl").read_text()
    run_pipeline(_cfg(tmp_path, "stages=[prepare]", "benchmark.num_problems=10"))
    out = capsys.readouterr().out
    assert "its config or inputs changed: moved the previous results to" in out
    assert len((tmp_path / "run" / "prepare" / "benchmark.jsonl").read_text().splitlines()) == 10
    stale = list((tmp_path / "run" / ".stale").glob("prepare-*"))
    assert len(stale) == 1 and (stale[0] / "benchmark.jsonl").read_text() == old  # nothing computed is lost


def test_force_recomputes_a_complete_stage(tmp_path, capsys):
    run_pipeline(_cfg(tmp_path, "stages=[prepare]"))
    run_pipeline(_cfg(tmp_path, "stages=[prepare]", "force=[prepare]"))
    assert "forced: moved the previous results" in capsys.readouterr().out


def test_downstream_stage_needs_complete_inputs(tmp_path):
    with pytest.raises(UserError, match="stage 'grade_teacher' needs stage 'sample_teacher', which is not complete"):
        run_pipeline(_cfg(tmp_path, "stages=[grade_teacher]"))


def test_unknown_stage_is_one_sentence(tmp_path):
    with pytest.raises(UserError, match="stages: unknown stage 'smaple'; the stages of experiment demo are prepare"):
        run_pipeline(_cfg(tmp_path, "stages=[smaple]"))


def test_failed_stage_is_marked_and_resumed_next_time(tmp_path, capsys):
    with pytest.raises(UserError, match="problems.source: unknown source 'ftp'"):
        run_pipeline(_cfg(tmp_path, "stages=[prepare]", "problems.source=ftp"))
    manifest = _manifest(tmp_path, "prepare")
    assert manifest["status"] == "failed" and "unknown source" in manifest["error"]
    run_pipeline(_cfg(tmp_path, "stages=[prepare]"))  # config fixed: the failed stage's folder is moved aside
    assert _manifest(tmp_path, "prepare")["status"] == "complete"


def test_a_second_process_running_a_stage_or_reading_it_is_refused_but_not_other_stages(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from nemo_recipes.pipeline import stage_lock
        with stage_lock(Path({str(run_dir)!r}), "sample_base", reads=("prepare",)):
            print("locked", flush=True)
            time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        in_use = rf"stage sample_base of {run_dir} is in use by pid {holder.pid} on .*; wait for that run"
        with pytest.raises(UserError, match=in_use):
            with stage_lock(run_dir, "sample_base"):
                pass
        with pytest.raises(UserError, match=in_use):  # grading it while it is written
            with stage_lock(run_dir, "grade_base", reads=("sample_base",)):
                pass
        with pytest.raises(UserError, match=rf"stage prepare of {run_dir} is in use by runs that read it \(pid "):
            with stage_lock(run_dir, "prepare"):  # recomputing what it reads
                pass
        with stage_lock(run_dir, "sample_teacher", reads=("prepare",)):  # another job of the run, another stage
            pass
    finally:
        holder.kill()
        holder.wait()
    with stage_lock(run_dir, "sample_base"):  # the kernel released the killed holder's lock
        pass


def test_dry_run_prints_states_and_writes_nothing(tmp_path, capsys):
    run_pipeline(_cfg(tmp_path, "stages=[prepare]"))
    capsys.readouterr()
    assert main([f"run_dir={tmp_path}/run", "dry_run=true"]) == 0
    out = capsys.readouterr().out
    assert "1. prepare         [complete, will skip]" in out
    assert "2. sample_teacher  [pending]  needs: prepare" in out
    assert "toy-teacher" in out and "50 problems x 8 = 400 samples" in out
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".locks", "prepare"]


def test_bad_input_file_names_file_and_line(tmp_path):
    cfg = _cfg(tmp_path, "stages=[prepare]", "problems.source=jsonl", f"+problems.local_path={tmp_path}/p.jsonl",
               "+problems.problem_key=question", "+problems.answer_key=answer")
    (tmp_path / "p.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?"\n')
    with pytest.raises(UserError, match=rf"{tmp_path}/p.jsonl:2: not valid JSON"):
        run_pipeline(cfg)
    (tmp_path / "p.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?"}\n')
    with pytest.raises(UserError, match=rf"{tmp_path}/p.jsonl:2: missing key 'answer'"):
        run_pipeline(cfg)
    (tmp_path / "p.jsonl").write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+2?", "answer": null}\n')
    with pytest.raises(UserError, match=rf"{tmp_path}/p.jsonl, row 2: 'answer' is null; every problem needs a gold"):
        run_pipeline(cfg)


def test_missing_input_file_is_one_sentence(tmp_path):
    cfg = _cfg(tmp_path, "stages=[prepare]", "problems.source=jsonl", f"+problems.local_path={tmp_path}/absent.jsonl",
               "+problems.problem_key=question", "+problems.answer_key=answer")
    with pytest.raises(UserError, match=rf"^{tmp_path}/absent.jsonl: file not found.$"):
        run_pipeline(cfg)


@pytest.mark.skipif(not COMP_MATH.exists(), reason="needs ../shared/research/data/comp-math-24-25.test.jsonl")
def test_hub_loader_gathers_the_cards_rows_into_one_problem_with_its_released_solutions(tmp_path, monkeypatch):
    # The dataset card's schema: one row per (problem, solution_type). The hub is unreachable here, so a stand-in
    # `datasets` module serves rows made by the test; the loading code is the real one.
    import types

    rows = [{"problem": f"P{i}", "expected_answer": i, "solution_type": kind, "solution": f"{kind} of P{i}"}
            for i in range(3) for kind in ("human_stage1", "human_stage4", "qwq_32b_preview")]
    calls = []
    fake = types.SimpleNamespace(load_dataset=lambda *a, **k: calls.append((a, k)) or rows)
    monkeypatch.setitem(sys.modules, "datasets", fake)
    run_pipeline(compose_config([f"run_dir={tmp_path}/run", "experiment=main", "stages=[prepare]",
                                 f"benchmark.local_path={COMP_MATH}"]))
    assert calls == [(("nvidia/Nemotron-Math-HumanReasoning",),
                      {"revision": "f7777aced9732aa133796bdcfafa2dfa2b1de8e7", "split": "train", "cache_dir": calls[0][1]["cache_dir"]})]
    problems = [json.loads(line) for line in (tmp_path / "run" / "prepare" / "problems.jsonl").open()]
    assert [p["id"] for p in problems] == ["nemotron-math-humanreasoning-0000", "nemotron-math-humanreasoning-0001",
                                          "nemotron-math-humanreasoning-0002"]
    assert problems[1]["expected_answer"] == "1" and problems[1]["subset"] == "seed"
    assert problems[1]["solutions"] == {"human_stage1": "human_stage1 of P1", "human_stage4": "human_stage4 of P1",
                                        "qwq_32b_preview": "qwq_32b_preview of P1"}
    assert "solution" not in problems[1] and "solution_type" not in problems[1]


def test_an_identical_stage_of_another_run_is_reused_by_hard_link_not_recomputed(tmp_path, capsys):
    first = compose_config([f"run_dir={tmp_path}/a", "progress=false", "stages=[prepare]"])
    run_pipeline(first)
    capsys.readouterr()
    second = compose_config([f"run_dir={tmp_path}/b", "progress=false", "stages=[prepare]",
                             f"reuse_from=[{tmp_path}/a]"])
    run_pipeline(second)
    assert f"[prepare] identical to {tmp_path}/a/prepare: reused it" in capsys.readouterr().out
    a, b = tmp_path / "a" / "prepare", tmp_path / "b" / "prepare"
    assert (a / "problems.jsonl").stat().st_ino == (b / "problems.jsonl").stat().st_ino
    reused = json.loads((b / "manifest.json").read_text())
    original = json.loads((a / "manifest.json").read_text())
    assert reused["fingerprint"] == original["fingerprint"] and reused["reused_from"] == str(a)
    assert "reused_from" not in original  # the source's manifest was not touched through the link
    # A different config is never reused: a third run with another benchmark size computes its own.
    third = compose_config([f"run_dir={tmp_path}/c", "progress=false", "stages=[prepare]", "benchmark.num_problems=10",
                            f"reuse_from=[{tmp_path}/a]"])
    run_pipeline(third)
    assert "reused" not in capsys.readouterr().out
    assert len((tmp_path / "c" / "prepare" / "benchmark.jsonl").read_text().splitlines()) == 10


def test_a_stage_recomputed_with_the_same_output_leaves_the_stages_after_it_complete(tmp_path):
    from nemo_recipes.io import write_json
    from nemo_recipes.pipeline import _inputs_digest, config_digest, stage_states

    cfg = _cfg(tmp_path, "stages=[prepare]")
    run_pipeline(cfg)
    sample = next(s for s in stage_graph(cfg) if s.name == "sample_teacher")
    run_dir = tmp_path / "run"
    (run_dir / "sample_teacher").mkdir()
    write_json(run_dir / "sample_teacher" / "manifest.json", {  # a finished teacher sampling, as the engine writes it
        "status": "complete", "config_hash": config_digest(cfg, sample), "inputs_hash": _inputs_digest(sample, run_dir),
        "fingerprint": "f" * 64})
    before = _manifest(tmp_path, "prepare")["fingerprint"]

    changed = _cfg(tmp_path, "stages=[prepare]", "+problems.note=a key that changes no record")
    assert stage_states(changed)["sample_teacher"] == "complete; runs again if prepare changes its output"
    run_pipeline(changed)
    assert list((run_dir / ".stale").glob("prepare-*"))  # prepare itself ran again ...
    assert _manifest(tmp_path, "prepare")["fingerprint"] == before  # ... with the same output
    assert stage_states(changed)["sample_teacher"] == "complete, will skip"
    forced = _cfg(tmp_path, "force=[prepare]")
    assert stage_states(forced)["prepare"] == "forced: will run again"
    assert stage_states(forced)["sample_teacher"] == "complete; runs again if prepare changes its output"
    # A run of sample_teacher alone does not run prepare, forced or not: the stage after it skips.
    assert stage_states(forced, {"sample_teacher"})["sample_teacher"] == "complete, will skip"


def test_keys_that_only_plan_or_split_the_work_change_no_stage_hash():
    from nemo_recipes.pipeline import config_digest

    def digests(*overrides):
        cfg = compose_config(["experiment=main", *overrides])
        return {stage.name: config_digest(cfg, stage) for stage in stage_graph(cfg)}

    default = digests()
    for override in ("teacher_sampling.expected_tokens=1", "teacher_sampling.throughput_tokens_per_s=1",
                     "teacher_sampling.num_shards=4", "teacher_sampling.shard=1", "eval_sampling.num_shards=2",
                     "grading.workers=7", "sft.logger=none", "sft.keep_checkpoints=false", "student.parallel.cp=4",
                     "teacher.num_params_b=1", "student.generation_tp=4"):
        changed = {name for name, digest in digests(override).items() if digest != default[name]}
        # student.parallel.cp changes the packs and the training layout; student.generation_tp the sampling.
        # (the report's provenance names every stage's config hash, so it follows any of them)
        allowed = {"student.parallel.cp=4": {"pack", "sft", "report"},
                   "student.generation_tp=4": {"sample_base", "sample_sft", "report"}}.get(override, set())
        assert changed == allowed, override
    assert {name for name, d in digests("teacher_sampling.temperature=0.5").items() if d != default[name]} == {
        "sample_teacher", "report"}
    assert {name for name, d in digests("grading.timeout_s=3").items() if d != default[name]} == {
        "grade_teacher", "grade_base", "grade_sft", "report"}


def test_stage_lists_given_as_one_name_are_lists_and_unknown_forced_stages_are_refused(tmp_path):
    from nemo_recipes.pipeline import selected_stages

    cfg = _cfg(tmp_path, "force=sample_sft", "stages=prepare")
    assert list(cfg.force) == ["sample_sft"] and list(cfg.stages) == ["prepare"]  # not "sft" in "sample_sft"
    assert [s.name for s in selected_stages(cfg)] == ["prepare"]
    with pytest.raises(UserError, match="force: unknown stage 'prepar'; the stages of experiment demo are prepare"):
        selected_stages(_cfg(tmp_path, "force=[prepar]"))


def test_evaluating_the_teacher_by_role_is_refused_with_the_way_to_do_it():
    with pytest.raises(UserError, match=r"evaluate: unknown model role 'teacher'; use base or sft .*evaluate=\[base\]"):
        stage_graph(compose_config(["evaluate=[base,sft,teacher]"]))


def test_shards_of_a_stage_run_at_once_but_each_shard_and_any_other_run_of_the_stage_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with stage_lock(run_dir, "sample_teacher", shard="sample_teacher-0"):
        with stage_lock(run_dir, "sample_teacher", shard="sample_teacher-1"):  # another node's shard, at once
            pass
        with pytest.raises(UserError, match=rf"shard sample_teacher-0 of {run_dir} is in use by pid \d+ on "):
            with stage_lock(run_dir, "sample_teacher", shard="sample_teacher-0"):
                pass
        with pytest.raises(UserError, match=rf"stage sample_teacher of {run_dir} is in use by shard runs "
                                            rf"\(sample_teacher-\d: pid \d+ on "):
            with stage_lock(run_dir, "sample_teacher"):  # the merge waits for the shards
                pass
    with stage_lock(run_dir, "sample_teacher"):
        pass


def test_a_shard_run_selects_its_sampling_stage_alone(tmp_path):
    from nemo_recipes.pipeline import _shard_run, selected_stages

    cfg = _cfg(tmp_path, "teacher_sampling.num_shards=2", "teacher_sampling.shard=1", "stages=[sample_teacher]")
    assert _shard_run(cfg, selected_stages(cfg)) == "sample_teacher-1"
    everything = _cfg(tmp_path, "teacher_sampling.num_shards=2", "teacher_sampling.shard=1")
    with pytest.raises(UserError, match=r"a shard run samples one stage and nothing else, but this one selects "
                                        r"prepare, .*then each node with e.g. stages=\[sample_teacher\]\."):
        run_pipeline(everything)
    assert _shard_run(_cfg(tmp_path), selected_stages(_cfg(tmp_path))) is None


def test_a_file_system_without_locks_is_one_sentence(tmp_path, monkeypatch):
    import fcntl

    def no_locks(handle, mode):
        raise OSError(38, "Function not implemented")

    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(UserError, match=r"cannot be locked \(Function not implemented\); put runs_root on a file "
                                        r"system with file locks"):
        with stage_lock(tmp_path, "prepare"):
            pass


def test_results_are_readable_by_whoever_the_umask_allows(tmp_path):
    import os
    import stat

    from nemo_recipes.io import write_json
    from nemo_recipes.training.checkpoints import publish_directory

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "manifest.json", {"status": "complete"})
        folder = tmp_path / ".model.tmp"
        folder.mkdir(mode=0o700)
        publish_directory(folder, tmp_path / "model")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "manifest.json").stat().st_mode) == 0o644  # mkstemp alone gives 0600
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o755


def test_a_config_file_that_is_not_yaml_is_one_sentence_naming_file_and_line(tmp_path, monkeypatch, capsys):
    import shutil

    from nemo_recipes import config

    conf = tmp_path / "conf"
    shutil.copytree(config.CONF_DIR, conf)
    with open(conf / "experiment" / "demo.yaml", "a") as f:
        f.write("broken: [unclosed\n")
    monkeypatch.setattr(config, "CONF_DIR", conf)
    assert main(["dry_run=true"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: bad configuration file: ") and f"({conf}/experiment/demo.yaml, line " in err
    assert len(err.splitlines()) == 1


def test_an_os_error_while_running_is_one_sentence_and_keeps_the_run_resumable(tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    assert main([f"run_dir={tmp_path}/a-file/run", "stages=[prepare]", "progress=false"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: [Errno 20] Not a directory") and err.endswith("once that is fixed.")


def test_the_plan_splits_the_nodes_gpus_not_the_planning_machines(monkeypatch, capsys):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")  # a workstation with one GPU planning an 8-GPU node's run
    assert main(["experiment=main", "dry_run=true", "stages=[sample_teacher]"]) == 0
    assert "CUDA_VISIBLE_DEVICES 0,1 | 2,3 | 4,5 | 6,7" in capsys.readouterr().out


def test_a_complete_stage_whose_output_is_gone_runs_again_and_one_whose_output_changed_is_recomputed(tmp_path,
                                                                                                   capsys):
    from nemo_recipes.pipeline import stage_states

    cfg = _cfg(tmp_path, "stages=[prepare]")
    run_pipeline(cfg)
    prepared = tmp_path / "run" / "prepare"
    problems = (prepared / "problems.jsonl").read_text()
    fingerprint = _manifest(tmp_path, "prepare")["fingerprint"]
    (prepared / "problems.jsonl").unlink()
    assert stage_states(cfg)["prepare"] == ("damaged (problems.jsonl is missing since it completed): will run again")
    with pytest.raises(UserError, match=r"stage 'sample_teacher' needs stage 'prepare', but in .*/run/prepare "
                                        r"problems.jsonl is missing since it completed; run 'prepare' again first"):
        run_pipeline(_cfg(tmp_path, "stages=[sample_teacher]"))
    capsys.readouterr()
    run_pipeline(cfg)
    assert "[prepare] complete, but problems.jsonl is missing since it completed: running it again" in (
        capsys.readouterr().out)
    assert (prepared / "problems.jsonl").read_text() == problems
    assert _manifest(tmp_path, "prepare")["fingerprint"] == fingerprint and not (tmp_path / "run" / ".stale").exists()

    with open(prepared / "benchmark.jsonl", "a") as benchmark:
        benchmark.write('{"id": "added by hand"}\n')
    run_pipeline(cfg)
    assert "[prepare] benchmark.jsonl changed since it completed: moved the previous results to" in (
        capsys.readouterr().out)
    assert "added by hand" in next((tmp_path / "run" / ".stale").glob("prepare-*/benchmark.jsonl")).read_text()
    assert "added by hand" not in (prepared / "benchmark.jsonl").read_text()
    assert _manifest(tmp_path, "prepare")["fingerprint"] == fingerprint

    (prepared / "problems.jsonl").touch()  # a new mtime, the same content: intact
    assert stage_states(cfg)["prepare"] == "complete, will skip"


def test_an_output_with_a_new_mtime_is_hashed_once_and_again_when_it_is_rewritten(tmp_path, monkeypatch):
    from nemo_recipes import pipeline

    cfg = _cfg(tmp_path, "stages=[prepare]")
    run_pipeline(cfg)
    problems = tmp_path / "run" / "prepare" / "problems.jsonl"
    problems.touch()  # a copy without -p: a new mtime, the same content
    hashed = []
    real = pipeline.sha256_file
    monkeypatch.setattr(pipeline, "sha256_file", lambda path, *args: hashed.append(Path(path)) or real(path, *args))
    for _ in range(3):
        assert pipeline.stage_states(cfg)["prepare"] == "complete, will skip"
    assert hashed == [problems]
    problems.write_text(problems.read_text().replace("0001", "0002", 1))  # a digit changed: the same size
    assert pipeline.stage_states(cfg)["prepare"] == "damaged (problems.jsonl changed since it completed): will recompute"


def test_a_shard_run_ends_with_its_own_chunks_and_the_merge_only_run_names_the_missing_shards(tmp_path, capsys):
    from nemo_recipes.io import read_json

    common = ["teacher_sampling.n=1", "teacher_sampling.chunk_size=10", "teacher_sampling.num_shards=5",
              "teacher_sampling.max_tokens=4"]
    run_pipeline(_cfg(tmp_path, "stages=[prepare]", *common))
    run_pipeline(_cfg(tmp_path, "stages=[sample_teacher]", "teacher_sampling.shard=3", *common))
    stage = tmp_path / "run" / "sample_teacher"
    assert sorted(p.name for p in (stage / "chunks").glob("chunk_*")) == ["chunk_00003.jsonl"]
    assert read_json(stage / ".shards" / "sample_teacher-3.json")["status"] == "complete"
    assert _manifest(tmp_path, "sample_teacher")["status"] == "running"  # the stage completes when merged
    with pytest.raises(UserError, match=r"4 of 5 chunks are missing in .*/chunks \(shards 0, 1, 2, 4\), and this "
                                        r"run only merges \(teacher_sampling.merge_only\): a shard job failed"):
        run_pipeline(_cfg(tmp_path, "stages=[sample_teacher]", "teacher_sampling.merge_only=true", *common))
    for shard in (0, 1, 2, 4):
        run_pipeline(_cfg(tmp_path, "stages=[sample_teacher]", f"teacher_sampling.shard={shard}", *common))
    run_pipeline(_cfg(tmp_path, "stages=[sample_teacher]", "teacher_sampling.merge_only=true", *common))
    assert _manifest(tmp_path, "sample_teacher")["status"] == "complete"
    assert len((stage / "generations.jsonl").read_text().splitlines()) == 50
