"""loso_dev_share: leave one speaker out for corpora too small to spare a dev speaker (TESS: 2 speakers,
SAVEE: 4); dev is a share of the training speakers' utterances, and the card and `data check` say so."""
import yaml

from replicas import write_wav


def _corpus(tmp_path, sertk_cli, speakers, per_class=5):
    rows = ["path,label,speaker"]
    for spk in speakers:
        for label in ("calm", "angry", "sad"):
            for i in range(per_class):
                write_wav(tmp_path / "wav" / f"{spk}_{label}_{i}.wav")
                rows.append(f"wav/{spk}_{label}_{i}.wav,{label},{spk}")
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    assert sertk_cli("data", "import", "--csv", tmp_path / "list.csv", "--out", tmp_path / "all").exit_code == 0
    return tmp_path / "all"


def _split(protocol_dir, k, split):
    return (protocol_dir / f"fold{k}" / split / "utt2spk").read_text().split("\n")[:-1]


def test_two_speakers_train_on_one_and_test_on_the_other(tmp_path, sertk_cli):
    data = _corpus(tmp_path, sertk_cli, ["ann", "bob"])
    out = tmp_path / "folds"
    result = sertk_cli("data", "folds", data, "--protocol", "loso_dev_share", "--out", out)
    assert result.exit_code == 0 and "2 folds, test speakers unseen, dev from the training speakers" in result.output
    card = yaml.safe_load((out / "protocol.yaml").read_text())
    assert card["dev_from_training_speakers"] is True and card["speaker_independent"] is True
    for k, (test_spk, train_spk) in enumerate([("ann", "bob"), ("bob", "ann")], start=1):
        test = dict(line.split() for line in _split(out, k, "test"))
        train = dict(line.split() for line in _split(out, k, "train"))
        dev = dict(line.split() for line in _split(out, k, "dev"))
        assert set(test.values()) == {test_spk}
        assert set(train.values()) == set(dev.values()) == {train_spk}
        assert len(dev) == 3 and len(train) == 12           # round(0.2 x 5) = 1 per class lent to dev
        assert not set(dev) & set(train)
    check = sertk_cli("data", "check", out)
    assert check.exit_code == 0 and "OK: in every fold, the test speaker is in neither train nor dev, dev is a share " \
        "of the training speakers' utterances (by design)" in check.output, check.output


def test_a_speaker_lends_the_same_utterances_to_dev_in_every_fold(tmp_path, sertk_cli):
    data = _corpus(tmp_path, sertk_cli, ["ann", "bob", "cat", "dan"], per_class=10)
    out = tmp_path / "folds"
    assert sertk_cli("data", "folds", data, "--protocol", "loso_dev_share", "--dev-share", "0.3",
                     "--out", out).exit_code == 0
    devs = [{u for u, s in (line.split() for line in _split(out, k, "dev")) if s == "dan"} for k in (1, 2, 3)]
    assert devs[0] == devs[1] == devs[2] and len(devs[0]) == 9        # 3 of 10 per class
    again = tmp_path / "again"
    assert sertk_cli("data", "folds", data, "--protocol", "loso_dev_share", "--dev-share", "0.3", "--seed", "1",
                     "--out", again).exit_code == 0
    assert {u for u, s in (line.split() for line in _split(again, 1, "dev")) if s == "dan"} != devs[0]


def test_bad_dev_shares_and_options_get_one_line(tmp_path, sertk_cli, user_error):
    data = _corpus(tmp_path, sertk_cli, ["ann", "bob"])
    for share in ("0", "1", "1.5", "-0.2"):
        line = user_error(sertk_cli("data", "folds", data, "--protocol", "loso_dev_share", "--dev-share", share,
                                    "--out", tmp_path / "x"))
        assert "--dev-share must be a fraction between 0 and 1" in line
    line = user_error(sertk_cli("data", "folds", data, "--protocol", "loso", "--dev-share", "0.2",
                                "--out", tmp_path / "x"))
    assert "--dev-share does not apply to loso" in line
    assert "loso needs at least 3 speakers" in user_error(
        sertk_cli("data", "folds", data, "--protocol", "loso", "--out", tmp_path / "x"))
    one = _corpus(tmp_path / "one", sertk_cli, ["ann"], per_class=2)
    assert "loso_dev_share needs at least 2 speakers" in user_error(
        sertk_cli("data", "folds", one, "--protocol", "loso_dev_share", "--out", tmp_path / "x"))
    single = _corpus(tmp_path / "single", sertk_cli, ["ann", "bob"], per_class=1)   # nothing to lend to dev
    assert "no dev utterances when testing speaker 'ann'" in user_error(
        sertk_cli("data", "folds", single, "--protocol", "loso_dev_share", "--out", tmp_path / "x"))
    pairs = _corpus(tmp_path / "pairs", sertk_cli, ["ann", "bob"], per_class=2)   # 2 of a class: 0.2 x 2 rounds to 0
    assert "(with --dev-share 0.2, a speaker lends one of a class to dev from 3 utterances of it)" in user_error(
        sertk_cli("data", "folds", pairs, "--protocol", "loso_dev_share", "--out", tmp_path / "x"))
    assert not (tmp_path / "x").exists()
