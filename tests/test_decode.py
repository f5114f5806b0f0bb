"""Voting rules on hand-computed cases, and the decode dir round trip."""

import numpy as np
import pytest
import yaml
from helpers import write_utt_segments

from sertk.decode import VOTING_RULES, decide, read_decode_dir, vote, write_decode_dir
from sertk.errors import OutputError, ScoreError

# --- voting rules -------------------------------------------------------------------------------


def test_mean_is_the_mean_posterior():
    post = vote([[0.6, 0.4], [0.2, 0.8]], "mean")
    np.testing.assert_allclose(post, [0.4, 0.6])
    assert decide([[0.6, 0.4], [0.2, 0.8]]) == 1  # mean is the default


def test_majority_counts_segment_votes_and_can_disagree_with_mean():
    seg = [[0.6, 0.4], [0.6, 0.4], [0.0, 1.0]]
    np.testing.assert_allclose(vote(seg, "majority"), [2 / 3, 1 / 3])
    assert decide(seg, "majority") == 0
    assert decide(seg, "mean") == 1  # mean posterior [0.4, 0.6]


def test_majority_tie_is_broken_by_mean_posterior():
    # one vote each; the mean posterior [0.305, 0.695] favours class 1, not the first tied class
    seg = [[0.51, 0.49], [0.1, 0.9]]
    np.testing.assert_allclose(vote(seg, "majority"), [0.5, 0.5])
    assert decide(seg, "majority") == 1
    # a three-way structure: classes 0 and 2 tie on votes, 1 gets none; mean favours 2
    seg = [[0.5, 0.2, 0.3], [0.1, 0.1, 0.8]]
    assert decide(seg, "majority") == 2


def test_logsum_is_the_renormalised_geometric_mean():
    np.testing.assert_allclose(vote([[0.9, 0.1], [0.4, 0.6]], "logsum"), [6 / 7, 1 / 7])  # 0.36 : 0.06
    np.testing.assert_allclose(vote([[0.8, 0.2], [0.2, 0.8], [0.5, 0.5]], "logsum"), [0.5, 0.5])


def test_logsum_with_zero_and_tiny_posteriors_stays_finite():
    post = vote([[0.5, 0.5], [0.0, 1.0]], "logsum")
    assert np.all(np.isfinite(post)) and post.sum() == pytest.approx(1.0)
    assert post[0] < 1e-9 and decide([[0.5, 0.5], [0.0, 1.0]], "logsum") == 1
    post = vote([[1e-300, 1.0], [1.0, 1e-300]], "logsum")
    np.testing.assert_allclose(post, [0.5, 0.5])
    many = np.tile([[1e-5, 1 - 1e-5]], (500, 1))  # product underflows without the max shift
    np.testing.assert_allclose(vote(many, "logsum"), [0.0, 1.0], atol=1e-12)


def test_max_is_the_renormalised_per_class_max():
    np.testing.assert_allclose(vote([[0.9, 0.1], [0.4, 0.6]], "max"), [0.6, 0.4])
    assert decide([[0.9, 0.1], [0.4, 0.6]], "max") == 0


@pytest.mark.parametrize("rule", VOTING_RULES)
def test_single_segment_gives_its_own_posterior(rule):
    seg = [[0.2, 0.7, 0.1]]
    expected = [0, 1, 0] if rule == "majority" else [0.2, 0.7, 0.1]
    np.testing.assert_allclose(vote(seg, rule), expected)
    assert decide(seg, rule) == 1
    assert decide(np.array([0.2, 0.7, 0.1]), rule) == 1  # a 1-D vector is one segment


@pytest.mark.parametrize("rule", VOTING_RULES)
def test_every_rule_gives_a_distribution(rule):
    seg = np.random.default_rng(0).dirichlet(np.ones(5), size=7)
    post = vote(seg, rule)
    assert post.shape == (5,) and np.all(post >= 0) and post.sum() == pytest.approx(1.0)
    assert decide(seg, rule) == int(np.argmax(post))


def test_bad_rule_and_bad_shapes_are_refused():
    with pytest.raises(ValueError, match="unknown voting rule 'median'"):
        vote([[0.5, 0.5]], "median")
    with pytest.raises(ValueError, match="shape"):
        vote(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="finite"):
        vote([[np.nan, 1.0]])


# --- decode dir ---------------------------------------------------------------------------------

CLASSES = ["a", "b", "c"]
SEGS = {"u1": [[0.7, 0.2, 0.1], [0.3, 0.3, 0.4]],
        "u2": [[0.1, 0.1, 0.8]],
        "u3": [[0.51, 0.49, 0.0], [0.1, 0.9, 0.0]]}


def test_decode_dir_round_trip(tmp_path):
    out = write_utt_segments(tmp_path / "decode_test", SEGS, CLASSES,
                             {"checkpoint": "exp/x/fold1/best.pt", "data_dir": "data/loso/fold1/test"})
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert names == {"post_seg", "seg2utt", "classes", "decode.yaml", "post", "hyp",
                     *(f"votes/{r}/{f}" for r in VOTING_RULES for f in ("post", "hyp"))}
    dec = read_decode_dir(out)
    assert dec.classes == CLASSES and dec.rules == list(VOTING_RULES)
    assert dec.utts == ["u1", "u2", "u3"] and dec.seg2utt["u1-s1"] == "u1"
    np.testing.assert_allclose(dec.seg_post["u1-s1"], [0.3, 0.3, 0.4])
    for rule in VOTING_RULES:
        for utt, segs in SEGS.items():
            np.testing.assert_allclose(dec.post[rule][utt], vote(segs, rule), rtol=1e-5)
            assert dec.hyp[rule][utt] == CLASSES[decide(segs, rule)]
    assert dec.hyp["majority"]["u3"] == "b"  # the tie, broken by the mean posterior
    assert dec.info == {"checkpoint": "exp/x/fold1/best.pt", "data_dir": "data/loso/fold1/test", "rule": "mean"}
    assert (out / "hyp").read_text() == (out / "votes" / "mean" / "hyp").read_text()
    assert (out / "post").read_text() == (out / "votes" / "mean" / "post").read_text()
    assert (out / "post_seg").read_text().splitlines()[0] == "u1-s0 0.7 0.2 0.1"


def test_default_rule_sets_the_top_level_copies(tmp_path):
    out = write_utt_segments(tmp_path / "d", SEGS, CLASSES, {}, default_rule="majority")
    assert (out / "hyp").read_text() == (out / "votes" / "majority" / "hyp").read_text()
    assert yaml.safe_load((out / "decode.yaml").read_text())["rule"] == "majority"
    assert read_decode_dir(out).default_rule == "majority"


def test_rewriting_replaces_a_decode_dir_but_never_another_folder(tmp_path):
    out = write_utt_segments(tmp_path / "d", SEGS, CLASSES)
    write_utt_segments(out, {"u9": [[0.0, 1.0, 0.0]]}, CLASSES)
    assert read_decode_dir(out).utts == ["u9"]
    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("keep me")
    with pytest.raises(OutputError, match="holds .todo.txt., which a decode dir does not contain"):
        write_utt_segments(other, SEGS, CLASSES)
    assert (other / "todo.txt").read_text() == "keep me"


def test_write_refuses_inconsistent_input(tmp_path):
    with pytest.raises(ValueError, match="only one of"):
        write_decode_dir(tmp_path / "d", {"s1": np.array([1.0, 0.0])}, {"s2": "u"}, ["a", "b"], {})
    with pytest.raises(ValueError, match="expected"):
        write_decode_dir(tmp_path / "d", {"s1": np.array([1.0, 0.0])}, {"s1": "u"}, ["a", "b", "c"], {})
    assert not (tmp_path / "d").exists()


def test_read_reports_missing_and_malformed_files(tmp_path):
    out = write_utt_segments(tmp_path / "d", SEGS, CLASSES)
    (out / "votes" / "max" / "hyp").unlink()
    with pytest.raises(ScoreError, match=r"votes/max/hyp: missing"):
        read_decode_dir(out)
    out = write_utt_segments(tmp_path / "d", SEGS, CLASSES)
    (out / "post_seg").write_text("u1-s0 0.5 0.5\nu1-s1 0.3 0.3 0.4\nu2-s0 0.1 0.1 0.8\n"
                                  "u3-s0 0.5 0.5 0\nu3-s1 0.1 0.9 0\n")
    with pytest.raises(ScoreError, match=r"post_seg: 'u1-s0' has 2 value\(s\), expected 3"):
        read_decode_dir(out)
    with pytest.raises(ScoreError, match="no such decode dir"):
        read_decode_dir(tmp_path / "nowhere")
