"""Protocols: fold construction, the card, and `check` catching every broken promise."""
import shutil

import pytest
import yaml

from replicas import make_emodb, make_ravdess
from replicas_licensed import make_iemocap
from sertk.data.check import check_protocol
from sertk.data.corpora import prepare_corpus
from sertk.data.datadir import DataDir
from sertk.data.labels import LabelMap
from sertk.data.protocols import actor6, loso, loso_session, loso_speaker, make_folds, random_kfold
from sertk.errors import ProtocolError

LABELS = LabelMap(("a", "b"), {"a": "a", "b": "b"}, "toy")


def toy_dir(speakers, per_speaker=4, sessions=None) -> DataDir:
    """An in-memory data dir (no audio): `per_speaker` utterances per speaker, classes alternating."""
    tables = {n: {} for n in ("wav.scp", "utt2spk", "utt2emo")}
    if sessions:
        tables["utt2sess"] = {}
    for spk in speakers:
        for i in range(per_speaker):
            utt = f"{spk}-{i:03d}"
            tables["wav.scp"][utt] = f"/nowhere/{utt}.wav"
            tables["utt2spk"][utt] = spk
            tables["utt2emo"][utt] = "ab"[i % 2]
            if sessions:
                tables["utt2sess"][utt] = sessions[spk]
    return DataDir(tables, LABELS)


def speakers_of(dd, utts):
    return {dd.utt2spk[u] for u in utts}


def assert_partition(dd, folds):
    for f in folds:
        assert sorted(f.train + f.dev + f.test) == dd.utts
    assert sorted(u for f in folds for u in f.test) == dd.utts


def test_loso_rotates_dev_over_training_speakers():
    dd = toy_dir([f"s{i}" for i in range(5)])
    folds = loso(dd)
    assert len(folds) == 5
    assert_partition(dd, folds)
    for k, f in enumerate(folds):
        assert speakers_of(dd, f.test) == {f"s{k}"} and speakers_of(dd, f.dev) == {f"s{(k + 1) % 5}"}
        assert not speakers_of(dd, f.train) & (speakers_of(dd, f.test) | speakers_of(dd, f.dev))


def test_loso_needs_three_speakers():
    with pytest.raises(ProtocolError, match="at least 3 speakers"):
        loso(toy_dir(["s1", "s2"]))


def test_loso_session_tests_whole_sessions_and_alternates_dev_gender():
    spk = [f"S{s}{g}" for s in range(1, 6) for g in "FM"]
    dd = toy_dir(spk, sessions={s: s[:2] for s in spk})
    folds = loso_session(dd)
    assert len(folds) == 5
    assert_partition(dd, folds)
    assert speakers_of(dd, folds[0].test) == {"S1F", "S1M"}
    assert [speakers_of(dd, f.dev) for f in folds] == [{"S2F"}, {"S3M"}, {"S4F"}, {"S5M"}, {"S1F"}]


def test_loso_session_refuses_a_speaker_in_two_sessions():
    dd = toy_dir(["A", "B", "C"], sessions={"A": "1", "B": "2", "C": "3"})
    dd.tables["utt2sess"]["A-000"] = "2"
    with pytest.raises(ProtocolError, match="speaker 'A' appears in sessions"):
        loso_session(dd)


def test_loso_session_needs_utt2sess():
    with pytest.raises(ProtocolError, match="needs utt2sess"):
        loso_session(toy_dir(["a", "b", "c"]))


def test_loso_speaker_tests_each_speaker_with_its_session_partner_as_dev():
    spk = [f"S{s}{g}" for s in range(1, 6) for g in "FM"]
    dd = toy_dir(spk, sessions={s: s[:2] for s in spk})
    folds = loso_speaker(dd)
    assert len(folds) == 10
    assert_partition(dd, folds)
    assert [speakers_of(dd, f.test) for f in folds[:3]] == [{"S1F"}, {"S1M"}, {"S2F"}]
    assert [speakers_of(dd, f.dev) for f in folds[:3]] == [{"S1M"}, {"S1F"}, {"S2M"}]
    assert speakers_of(dd, folds[0].train) == set(spk) - {"S1F", "S1M"}


def test_loso_speaker_needs_a_session_partner_for_dev():
    dd = toy_dir(["A", "B", "C"], sessions={"A": "1", "B": "1", "C": "2"})
    with pytest.raises(ProtocolError, match="speaker C is alone in its session"):
        loso_speaker(dd)
    with pytest.raises(ProtocolError, match="loso_speaker needs utt2sess"):
        loso_speaker(toy_dir(["a", "b", "c"]))


def test_actor6_groups_of_four():
    dd = toy_dir([f"ravdess_{i:02d}" for i in range(1, 25)], per_speaker=2)
    folds = actor6(dd)
    assert_partition(dd, folds)
    assert speakers_of(dd, folds[1].test) == {f"ravdess_{i:02d}" for i in (5, 6, 7, 8)}
    assert speakers_of(dd, folds[1].dev) == {f"ravdess_{i:02d}" for i in (9, 10, 11, 12)}
    assert speakers_of(dd, folds[5].dev) == {f"ravdess_{i:02d}" for i in (1, 2, 3, 4)}
    with pytest.raises(ProtocolError, match="needs 24 actors, found 3"):
        actor6(toy_dir(["a", "b", "c"]))


def test_random_kfold_is_stratified_seeded_and_partitions():
    dd = toy_dir(["s1", "s2", "s3"], per_speaker=20)  # 30 of each class
    folds = random_kfold(dd, num_folds=5, seed=1)
    assert_partition(dd, folds)
    for f in folds:
        assert len(f.test) == 12 and sum(dd.utt2emo[u] == "a" for u in f.test) == 6
    assert random_kfold(dd, num_folds=5, seed=1)[0].test == folds[0].test
    assert random_kfold(dd, num_folds=5, seed=2)[0].test != folds[0].test


def test_card_and_layout(tmp_path):
    root = make_emodb(tmp_path / "emodb", speakers=["03", "08", "09", "10"], texts=["a01"])
    dd = prepare_corpus("emodb", root, tmp_path / "all").datadir
    card = make_folds(dd, "loso", tmp_path / "loso", source="all")
    on_disk = yaml.safe_load((tmp_path / "loso" / "protocol.yaml").read_text())
    assert on_disk == card
    assert card["corpus"] == "emodb" and card["num_folds"] == 4 and card["speaker_independent"] is True
    assert card["classes"] == list(dd.labels.classes) and card["checksum"].startswith("sha256:")
    assert card["folds"][0]["test_speakers"] == ["emodb_03"] and card["folds"][0]["dev_speakers"] == ["emodb_08"]
    assert (tmp_path / "loso" / "utt2fold").read_text().splitlines()[0] == "emodb_03-03a01Aa 1"
    for split in ("train", "dev", "test"):
        assert (tmp_path / "loso" / "fold2" / split / "labels.yaml").is_file()
    report = check_protocol(tmp_path / "loso")
    assert report.problems == []
    assert ["1", "test", "1"] + ["1"] * 7 + ["7"] in [line.split() for line in report.table.splitlines()]


@pytest.fixture
def emodb_loso(tmp_path):
    root = make_emodb(tmp_path / "emodb", speakers=["03", "08", "09", "10"], texts=["a01"])
    dd = prepare_corpus("emodb", root, tmp_path / "all").datadir
    make_folds(dd, "loso", tmp_path / "loso")
    return tmp_path / "loso"


def move_lines(src_dir, dst_dir, speaker):
    """Move a speaker's utterances from one split dir to another, keeping both dirs valid."""
    src, dst = DataDir.load(src_dir), DataDir.load(dst_dir)
    moved = [u for u in src.utts if src.utt2spk[u] == speaker]
    keep = [u for u in src.utts if u not in moved]
    merged = DataDir({n: {**dst.tables[n], **{u: src.tables[n][u] for u in moved}} for n in dst.tables}, dst.labels)
    src.select(keep).save(src_dir)
    merged.save(dst_dir)


def test_check_catches_a_speaker_leak(emodb_loso):
    fold = emodb_loso / "fold1"
    # copy one test utterance's speaker into train: a leak of the test speaker
    test = DataDir.load(fold / "test")
    train = DataDir.load(fold / "train")
    u = test.utts[0]
    leaked = DataDir({n: {**train.tables[n], u: test.tables[n][u]} for n in train.tables}, train.labels)
    leaked.save(fold / "train")
    problems = check_protocol(emodb_loso).problems
    assert any("in both train and test" in p for p in problems)
    assert any("speaker(s) ['emodb_03'] are in both train and test" in p for p in problems)
    assert any("checksum" in p for p in problems)


def test_check_catches_an_untested_utterance(emodb_loso):
    move_lines(emodb_loso / "fold2" / "test", emodb_loso / "fold2" / "train", "emodb_08")
    problems = check_protocol(emodb_loso).problems
    assert any("never tested" in p for p in problems) and any("utt2fold" in p for p in problems)


def test_check_catches_a_broken_fold_dir(emodb_loso):
    (emodb_loso / "fold3" / "dev" / "utt2emo").unlink()
    assert any(p.startswith("fold3:") and "required file is missing" in p
               for p in check_protocol(emodb_loso).problems)


@pytest.mark.parametrize("edit, message", [
    ({"num_folds": "four"}, "'num_folds' must be a whole number >= 1, not 'four'"),
    ({"num_folds": True}, "'num_folds' must be a whole number >= 1"),
    ({"classes": 5}, "'classes' must be a list of class names, not 5"),
    ({"classes": [1]}, "'classes' must list names"),
    ({"folds": [{"fold": "one"}]}, "'folds' entries with a 'fold' number"),
])
def test_an_edited_card_with_wrong_types_is_one_line(emodb_loso, tmp_path, edit, message):
    protocol = tmp_path / "p"
    shutil.copytree(emodb_loso, protocol)
    card = yaml.safe_load((protocol / "protocol.yaml").read_text())
    (protocol / "protocol.yaml").write_text(yaml.safe_dump({**card, **edit}))
    with pytest.raises(ProtocolError, match=message):
        check_protocol(protocol)


def test_check_without_card(tmp_path):
    with pytest.raises(ProtocolError, match="no protocol.yaml"):
        check_protocol(tmp_path)


def test_random_kfold_is_declared_speaker_dependent(tmp_path):
    root = make_ravdess(tmp_path / "rav", actors=[1, 2, 3], emotions=[1, 2, 3], with_song=False)
    dd = prepare_corpus("ravdess", root, tmp_path / "all").datadir
    card = make_folds(dd, "random_kfold", tmp_path / "rk", num_folds=3)
    assert card["speaker_independent"] is False and card["options"] == {"num_folds": 3}
    assert check_protocol(tmp_path / "rk").problems == []


def test_iemocap_loso_session_on_replica(tmp_path):
    release = make_iemocap(tmp_path / "iemocap")
    dd = prepare_corpus("iemocap", release, tmp_path / "all").datadir
    card = make_folds(dd, "loso_session", tmp_path / "ls")
    assert card["num_folds"] == 5
    assert card["folds"][0]["test_speakers"] == ["iemocap_Ses01F", "iemocap_Ses01M"]
    assert check_protocol(tmp_path / "ls").problems == []


def test_failed_folds_leave_output_untouched(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "marker").write_text("x")
    with pytest.raises(ProtocolError):
        make_folds(toy_dir(["a", "b"]), "loso", out)
    with pytest.raises(ProtocolError, match="unknown protocol"):
        make_folds(toy_dir(["a", "b", "c"]), "nope", out)
    assert [p.name for p in out.iterdir()] == ["marker"]
    shutil.rmtree(out)


def test_random_kfold_keeps_copies_of_the_same_audio_in_one_part(tmp_path):
    """RAVDESS ships byte-identical files: a random split must not train on one copy and test the other."""
    import numpy as np
    import soundfile as sf
    rng = np.random.default_rng(0)
    dd = toy_dir(["s1", "s2", "s3"], per_speaker=6)
    for utt in dd.utts:
        path = tmp_path / f"{utt}.wav"
        sf.write(str(path), rng.uniform(-0.5, 0.5, 1600).astype(np.float32), 16000)
        dd.tables["wav.scp"][utt] = str(path)
    shutil.copyfile(tmp_path / "s1-000.wav", tmp_path / "s3-005.wav")        # same samples, another name
    dd.tables["wav.scp"]["s2-003"] = dd.tables["wav.scp"]["s1-002"]          # the same file twice
    for seed in range(5):
        folds = random_kfold(dd, num_folds=3, seed=seed)
        for fold in folds:
            for a, b in (("s1-000", "s3-005"), ("s1-002", "s2-003")):
                assert (a in fold.test) == (b in fold.test) and (a in fold.train) == (b in fold.train)
        assert sorted(u for f in folds for u in f.test) == dd.utts
    make_folds(dd, "random_kfold", tmp_path / "rk", num_folds=3)
    assert check_protocol(tmp_path / "rk").problems == []
