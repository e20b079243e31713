"""Trace structure on made-up traces with known counts: markers, lengths, truncation, boxed answers, divergence, the
reasoning-mode verdict, the traces stage, the report section of a target, and the command on any file."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from nemo_recipes.cli import compose_config
from nemo_recipes.errors import UserError
from nemo_recipes.traces.markers import markers_from_config

MARKERS = markers_from_config(OmegaConf.create({"reflection": ["but wait", "wait", "hmm+", "alternatively"],
                                                "verification": ["let me (?:double-)?check", "let me verify"]}))


def test_markers_are_whole_words_in_any_case_and_each_counted_once():
    text = "But wait, hmm. HMMM... Waiting is over. Wait: let me double-check. Alternatively, let me check it; wait"
    found = [MARKERS.patterns[index] for index in MARKERS.find(text)]
    assert found == [("reflection", "but wait"), ("reflection", "hmm+"), ("reflection", "hmm+"),
                     ("reflection", "wait"), ("verification", "let me (?:double-)?check"),
                     ("reflection", "alternatively"), ("verification", "let me (?:double-)?check"),
                     ("reflection", "wait")]  # "but wait" once, not also "wait"; "Waiting" is no marker
    assert MARKERS.remove("Wait, 2 + 2 = 4. Hmm, alternatively: 4. Let me verify it.") == "2 + 2 = 4. 4. it."
    assert MARKERS.find("İ wait \\W Wait") == [1, 1]  # a character whose lower case is longer moves nothing
    assert MARKERS.remove("İ, wait: x") == "İ, x"


@pytest.mark.parametrize("patterns, message", [
    ({"reflection": ["wait("]}, r"markers.reflection: 'wait\(' is not a regular expression"),
    ({"reflection": ["Wait"]}, r"markers.reflection: 'Wait' has upper-case letters; write it in lower case"),
    ({"verification": ["(?:check)?"]}, r"markers.verification: '\(\?:check\)\?' matches the empty string"),
    ({"reflection": "wait"}, r"markers.reflection must be a list of regular expressions"),
    ({"reflection": []}, r"markers: every kind is empty"),
])
def test_a_bad_marker_is_one_sentence_naming_its_key(patterns, message):
    with pytest.raises(UserError, match=message):
        markers_from_config(OmegaConf.create(patterns))


def test_the_keyword_ablation_hashes_the_marker_list_and_the_paper_strategy_does_not():
    from nemo_recipes.pipeline import config_digest, stage_graph

    def select_hash(*overrides):
        cfg = compose_config(["experiment=main", *overrides])
        return config_digest(cfg, next(s for s in stage_graph(cfg) if s.name == "select"))

    assert select_hash() == select_hash("markers.reflection=[wait]")
    assert select_hash("selection=no_keywords") != select_hash("selection=no_keywords", "markers.reflection=[wait]")
