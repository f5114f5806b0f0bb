"""`sertk pack` and `sertk infer` on a tiny model trained on a generated corpus; the VAD on generated
recordings (and, when ../shared/corpora is there, on real speech)."""
import csv
import io
import json
import os
import shutil
import sys
import zipfile

import numpy as np
import pytest
import soundfile as sf
import torch

from recipes import CORPORA
from replicas import make_emodb, make_recording, speech_like, write_wav
from sertk.data.corpora import prepare_corpus
from sertk.data.protocols import make_folds
from sertk.decode import read_decode_dir
from sertk.decode.decoder import decode_data_dir
from sertk.features.cmvn import plain_state
from sertk.features.extract import extract_features
from sertk.inference.inferencer import InferenceError, Inferencer, Utterance
from sertk.inference.pack import pack_experiment
from sertk.inference.pack_file import read_pack
from sertk.inference.packed import META_MEMBER, WEIGHTS_MEMBER, PackError
from sertk.inference.vad import SileroVad, VadConfig, VadError, detect_speech, speech_chunks, silero_available
from sertk.config.loading import load_config
from sertk.train.trainer import train

FEATURES = {"sample_rate": 16000, "streams": {"logmel": {"type": "logmel", "n_mels": 16}}}
TINY = ["model.name=crnn", "model.n_mels=16", "model.channels=[4,8]", "model.lstm_hidden=8",
        "model.attention_hidden=8", "train.epochs=2", "train.batch_size=4", "segments.length=0.3",
        "segments.hop=0.1", "features.tag=tiny"]
CLASSES = ["anger", "boredom", "disgust", "fear", "happiness", "sadness", "neutral"]


@pytest.fixture(scope="module", params=["speaker", "global"])
def trained(request, tmp_path_factory):
    """A fold trained, dev and test decoded, and packed: (base dir, fold exp dir, packed model)."""
    base = tmp_path_factory.mktemp(f"infer_{request.param}")
    root = make_emodb(base / "emodb", speakers=["03", "08", "09"], texts=["a01", "b02"], emotions="WLA")
    prepare_corpus("emodb", root, base / "all")
    make_folds(prepare_corpus("emodb", root, base / "all").datadir, "loso", base / "loso")
    extract_features(base / "all", FEATURES, base / "dump")
    exp = base / "exp" / "fold1"
    train(load_config(None, TINY + [f"features.cmvn={request.param}"]), base / "loso" / "fold1", base / "dump", exp)
    for part in ("dev", "test"):
        decode_data_dir(exp, base / "loso" / "fold1" / part, base / "dump", exp / f"decode_{part}",
                        protocol_dir=base / "loso")
    pack_experiment(exp, base / "model.sertk")
    return base, exp, base / "model.sertk"


def read_csv(text):
    return list(csv.DictReader(io.StringIO(text)))


def posteriors(row):
    return np.array([float(row[f"p_{c}"]) for c in CLASSES])


# --- packing ------------------------------------------------------------------------------------


def test_packed_model_gives_the_exp_dirs_posteriors(trained, sertk_cli):
    base, exp, model = trained
    for part in ("dev", "test"):
        decoded = read_decode_dir(exp / f"decode_{part}")
        result = sertk_cli("-q", "infer", model, base / "loso" / "fold1" / part / "wav.scp")
        assert result.exit_code == 0, result.output
        rows = read_csv(result.stdout)
        assert [r["id"] for r in rows] == decoded.utts   # wav.scp order, its utterance ids
        for r in rows:
            assert r["label"] == decoded.hyp[decoded.default_rule][r["id"]]
            np.testing.assert_allclose(posteriors(r), decoded.post[decoded.default_rule][r["id"]], atol=2e-6)
            assert r["chunk"] == "" and float(r["start"]) == 0.0


def test_pack_holds_what_the_model_was_trained_and_scored_with(trained, sertk_cli):
    base, exp, model = trained
    packed = read_pack(model)
    assert packed.classes == CLASSES and packed.meta["model"] == "crnn"
    ckpt = torch.load(exp / "best.pt", weights_only=True)
    assert packed.weights.keys() == ckpt["model"].keys()
    assert all(torch.equal(packed.weights[k], ckpt["model"][k]) for k in ckpt["model"])
    assert packed.config == ckpt["config"]
    assert packed.feature_config["streams"]["logmel"]["n_mels"] == 16
    assert packed.layout_info == {"dims": {"logmel": 16}, "frame_shift": {"logmel": 0.01}}
    if packed.normalization["mode"] == "global":
        assert packed.normalization == plain_state(ckpt["normalization"])   # tensors as JSON lists
    else:   # training speakers' statistics stay behind; one file (one utterance) gets the training data's
        assert "speakers" not in json.dumps(packed.normalization)
        assert packed.normalization["streams"]["logmel"]["min_utts"] == 3   # features.speaker_min_utts
        from sertk.data.datadir import DataDir
        from sertk.features.reading import Normalization
        lone = DataDir({"wav.scp": {"x": "x.wav"}, "utt2spk": {"x": "x"}})
        frames = np.random.default_rng(0).normal(size=(500, 16)).astype(np.float32)
        cmvn = Normalization.from_state_dict(packed.normalization, {"logmel": {"x": frames}}, lone).per_stream["logmel"]
        assert cmvn.statistics_of("x") is cmvn.fallback
    assert packed.meta["protocol"]["protocol"] == "loso" and packed.meta["protocol"]["fold"]["fold"] == 1
    test = packed.meta["metrics"]["test"]
    assert test["num_utts"] == len(read_decode_dir(exp / "decode_test").utts) and 0 <= test["ua"] <= 1
    assert packed.meta["metrics"]["dev"]["ua"] == ckpt["dev"]["ua"]
    info = sertk_cli("pack", "--info", model)
    assert info.exit_code == 0
    for text in ("model: crnn", "anger, boredom, disgust", "fold 1 of 3", f"UA {100 * test['ua']:.2f}",
                 "segments: 0.3 s windows every 0.1 s", f"normalisation: {packed.normalization['mode']}"):
        assert text in info.stdout
    again = sertk_cli("pack", exp, "-o", model)
    assert "already packed from this best.pt" in again.stdout


def test_pack_info_names_every_commit_the_model_trained_under(trained, sertk_cli, tmp_path):
    _, _, model = trained
    with zipfile.ZipFile(model) as zf:
        meta, weights = json.loads(zf.read(META_MEMBER)), zf.read(WEIGHTS_MEMBER)
    start = meta["environment"]["git_hash"]

    def info_with(resumed):
        meta["environment"]["resumed"] = resumed
        with zipfile.ZipFile(tmp_path / "m.sertk", "w") as zf:
            zf.writestr(META_MEMBER, json.dumps(meta))
            zf.writestr(WEIGHTS_MEMBER, weights)
        out = sertk_cli("pack", "--info", tmp_path / "m.sertk")
        assert out.exit_code == 0
        return next(line for line in out.stdout.splitlines() if line.startswith("trained on:"))

    line = info_with([{"after_epoch": 1, "git_hash": "b" * 40}, {"after_epoch": 2, "git_hash": start}])
    assert line.endswith(f"git {start}, resumed under {'b' * 40}")
    assert info_with(7).endswith(f"git {start}")   # a damaged record: the start commit alone, no traceback


def test_pack_errors(trained, sertk_cli, user_error, tmp_path):
    base, exp, model = trained
    assert "holds 1 fold(s); pack one fold's model" in user_error(sertk_cli("pack", base / "exp", "-o", tmp_path / "m"))
    assert "no best.pt; train the model first" in user_error(sertk_cli("pack", tmp_path, "-o", tmp_path / "m"))
    bare = tmp_path / "bare"
    bare.mkdir()
    (bare / "best.pt").write_bytes((exp / "best.pt").read_bytes())
    assert "give it with --feats dump/<tag>" in user_error(sertk_cli("pack", bare, "-o", tmp_path / "m"))
    assert "not a feature dump" in user_error(sertk_cli("pack", bare, "--feats", tmp_path, "-o", tmp_path / "m"))
    several = sertk_cli("pack", bare, exp, "-o", tmp_path / "m")
    assert several.exit_code == 2 and "-o names one file, but 2 exp dirs were given" in several.output
    assert sertk_cli("pack", bare, "--feats", base / "dump").exit_code == 0   # default -o: EXP_DIR/model.sertk
    assert read_pack(bare / "model.sertk").meta["metrics"]["test"] is None


def test_stage_6_packs_only_finished_folds_decoded_with_their_best_pt(trained, sertk_cli, tmp_path):
    import shutil
    _, exp, _ = trained
    fold = tmp_path / "fold1"
    shutil.copytree(exp, fold, ignore=shutil.ignore_patterns("*.sertk"))
    ready = sertk_cli("pack", fold, "--skip-unfinished")
    assert ready.exit_code == 0 and (fold / "model.sertk").is_file()
    (fold / "model.sertk").unlink()
    state = torch.load(fold / "last.pt", weights_only=True)
    state["finished"] = False   # training goes on: best.pt may still change
    torch.save(state, fold / "last.pt")
    result = sertk_cli("pack", fold, "--skip-unfinished")
    assert result.exit_code == 0 and f"{fold}: still training (epoch {state['epoch']}); not packed" in result.output
    state["finished"] = True
    torch.save(state, fold / "last.pt")
    (fold / "best.pt").write_bytes((fold / "best.pt").read_bytes() + b"\0")   # trained again since the decode
    assert "decoded with another checkpoint than its best.pt; not packed" in \
        sertk_cli("pack", fold, "--skip-unfinished").output
    shutil.rmtree(fold / "decode_test")
    assert "its test set is not decoded yet (stage 4); not packed" in sertk_cli("pack", fold, "--skip-unfinished").output
    assert not (fold / "model.sertk").exists()


def test_damaged_and_foreign_packs_are_refused_without_unpickling(trained, tmp_path, user_error, sertk_cli):
    _, _, model = trained
    (tmp_path / "text.sertk").write_text("hello")
    assert "not a packed sertk model" in user_error(sertk_cli("pack", "--info", tmp_path / "text.sertk"))
    with zipfile.ZipFile(model) as zf:
        meta, weights = zf.read(META_MEMBER), zf.read(WEIGHTS_MEMBER)

    def repack(name, members):
        with zipfile.ZipFile(tmp_path / name, "w") as zf:
            for member, data in members.items():
                zf.writestr(member, data)
        return tmp_path / name

    assert "no sertk-model.json / weights.pt" in user_error(
        sertk_cli("infer", repack("half.sertk", {META_MEMBER: meta}), "x.wav"))
    assert "damaged packed model, its weights cannot be read" in user_error(
        sertk_cli("infer", repack("cut.sertk", {META_MEMBER: meta, WEIGHTS_MEMBER: weights[:100]}), "x.wav"))
    # a weights file holding an arbitrary object: torch.load(weights_only=True) refuses to build it
    buf = io.BytesIO()
    torch.save({"x": zipfile.ZipInfo("evil")}, buf)
    with pytest.raises(PackError, match="its weights cannot be read"):
        read_pack(repack("evil.sertk", {META_MEMBER: meta, WEIGHTS_MEMBER: buf.getvalue()}))
    newer = json.loads(meta)
    newer["format_version"] = 99
    assert "packed with a newer sertk" in user_error(
        sertk_cli("pack", "--info", repack("new.sertk", {META_MEMBER: json.dumps(newer), WEIGHTS_MEMBER: weights})))


def test_pack_refuses_to_replace_a_file_that_is_not_a_pack(trained, sertk_cli, user_error, tmp_path):
    base, exp, model = trained
    thesis = tmp_path / "thesis.txt"
    thesis.write_text("draft\n")
    other_zip = tmp_path / "photos.zip"
    with zipfile.ZipFile(other_zip, "w") as zf:
        zf.writestr("holiday.jpg", b"jpeg")
    for path in (thesis, other_zip, exp / "best.pt", exp / "config.yaml"):
        before = path.read_bytes()
        message = user_error(sertk_cli("pack", exp, "-o", path))
        assert message == (f"{path}: exists and is not a packed sertk model; refusing to replace it "
                           "(move it away or give another -o, e.g. model.sertk)")
        assert path.read_bytes() == before


def test_pack_replaces_its_own_older_or_damaged_pack(trained, sertk_cli, tmp_path):
    base, exp, model = trained
    with zipfile.ZipFile(model) as zf:
        meta, weights = json.loads(zf.read(META_MEMBER)), zf.read(WEIGHTS_MEMBER)
    meta["source"]["checkpoint_sha256"] = "0" * 64      # packed from an earlier best.pt
    for name, text in (("older.sertk", json.dumps(meta)), ("damaged.sertk", "{not json")):
        with zipfile.ZipFile(tmp_path / name, "w") as zf:
            zf.writestr(META_MEMBER, text)
            zf.writestr(WEIGHTS_MEMBER, weights)
        result = sertk_cli("pack", exp, "-o", tmp_path / name)
        assert result.exit_code == 0, result.output
        assert read_pack(tmp_path / name).meta["source"] == read_pack(model).meta["source"]
    assert "already packed" in sertk_cli("pack", exp, "-o", tmp_path / "older.sertk").stdout

    # damaged weights, same best.pt: it was "already packed" and stayed unreadable
    data = bytearray(model.read_bytes())
    with zipfile.ZipFile(model) as zf:
        member = zf.getinfo(WEIGHTS_MEMBER)
    data[member.header_offset + 30 + len(member.filename) + member.file_size // 2] ^= 0xFF   # mid-weights
    (tmp_path / "flipped.sertk").write_bytes(bytes(data))
    assert "already packed" not in sertk_cli("pack", exp, "-o", tmp_path / "flipped.sertk").stdout
    assert read_pack(tmp_path / "flipped.sertk").meta["source"] == read_pack(model).meta["source"]


def test_pack_keeps_another_exp_dirs_pack_a_newer_sertks_and_refuses_non_finite_weights(trained, sertk_cli,
                                                                                         tmp_path, user_error):
    base, exp, model = trained
    with zipfile.ZipFile(model) as zf:
        meta, weights = json.loads(zf.read(META_MEMBER)), zf.read(WEIGHTS_MEMBER)
    other = dict(meta, source=dict(meta["source"], exp_dir="/elsewhere/exp/fold3", checkpoint_sha256="1" * 64))
    newer = dict(meta, format_version=meta["format_version"] + 1)
    for name, doc in (("other.sertk", other), ("newer.sertk", newer)):
        with zipfile.ZipFile(tmp_path / name, "w") as zf:
            zf.writestr(META_MEMBER, json.dumps(doc))
            zf.writestr(WEIGHTS_MEMBER, weights)
        before = (tmp_path / name).read_bytes()
        message = user_error(sertk_cli("pack", exp, "-o", tmp_path / name))
        assert message.endswith("not replaced: move it away or give another -o")
        assert (tmp_path / name).read_bytes() == before
    assert "/elsewhere/exp/fold3, another exp dir" in user_error(sertk_cli("pack", exp, "-o", tmp_path / "other.sertk"))
    # the same best.pt reached through a moved exp dir: already packed, not another's
    moved = dict(meta, source=dict(meta["source"], exp_dir="/old/place/exp/fold1"))
    with zipfile.ZipFile(tmp_path / "moved.sertk", "w") as zf:
        zf.writestr(META_MEMBER, json.dumps(moved))
        zf.writestr(WEIGHTS_MEMBER, weights)
    assert "already packed" in sertk_cli("pack", exp, "-o", tmp_path / "moved.sertk").stdout

    diverged = tmp_path / "diverged" / "fold1"
    shutil.copytree(exp, diverged, ignore=shutil.ignore_patterns("*.sertk", ".lock"))
    ckpt = torch.load(diverged / "best.pt", weights_only=False)
    name = next(k for k, v in ckpt["model"].items() if v.is_floating_point())
    ckpt["model"][name] = ckpt["model"][name] * float("nan")
    torch.save(ckpt, diverged / "best.pt")
    message = user_error(sertk_cli("pack", diverged, "-o", tmp_path / "nan.sertk"))
    assert message == f"{diverged / 'best.pt'}: tensor {name} holds NaN or Inf (a diverged or damaged model); not packed"
    assert not (tmp_path / "nan.sertk").exists()
    with zipfile.ZipFile(tmp_path / "nan.sertk", "w") as zf:   # packed elsewhere: refused on reading
        zf.writestr(META_MEMBER, json.dumps(meta))
        buf = io.BytesIO()
        torch.save(ckpt["model"], buf)
        zf.writestr(WEIGHTS_MEMBER, buf.getvalue())
    with pytest.raises(PackError, match=f"tensor {name} holds NaN or Inf; the model cannot decide"):
        read_pack(tmp_path / "nan.sertk")


# --- inputs and outputs -------------------------------------------------------------------------


def test_infer_on_files_a_directory_and_formats(trained, sertk_cli, tmp_path):
    _, _, model = trained
    audio = tmp_path / "audio"
    write_wav(audio / "mono16k.wav", seconds=1.0)
    write_wav(audio / "stereo.wav", seconds=1.0, channels=2)
    write_wav(audio / "sub" / "rate8k.wav", seconds=1.0, sr=8000)
    write_wav(audio / "sub" / "rate44k.wav", seconds=1.0, sr=44100)
    sf.write(str(audio / "float.wav"), speech_like(1.0), 16000, subtype="FLOAT")
    sf.write(str(audio / "sub" / "clip.flac"), speech_like(1.0, seed=1), 16000, format="FLAC")
    (audio / "notes.txt").write_text("not audio: not an input\n")
    result = sertk_cli("infer", model, audio, "--out", tmp_path / "r.csv")
    assert result.exit_code == 0, result.output
    rows = read_csv((tmp_path / "r.csv").read_text())
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "r.csv").stat().st_mode & 0o777 == 0o666 & ~umask   # as open() makes it, not mkstemp's 0600
    assert model.stat().st_mode & 0o777 == 0o666 & ~umask
    names = [r["id"][len(str(audio)) + 1:] for r in rows]
    assert names == ["float.wav", "mono16k.wav", "stereo.wav", "sub/clip.flac", "sub/rate44k.wav", "sub/rate8k.wav"]
    assert list(rows[0]) == ["id", "path", "chunk", "start", "end", "label"] + [f"p_{c}" for c in CLASSES] + ["note"]
    for r in rows:
        assert r["label"] in CLASSES and abs(posteriors(r).sum() - 1) < 1e-4
        assert float(r["end"]) == pytest.approx(1.0, abs=1e-3)
    # the same files named one by one: the same rows, in the order given
    files = [audio / "stereo.wav", audio / "mono16k.wav"]
    single = read_csv(sertk_cli("-q", "infer", model, *files).stdout)
    assert [r["id"] for r in single] == [str(f) for f in files]
    by_id = {r["id"]: r for r in rows}
    for r in single:   # stereo mono-mixed: identical channels give the mono file's result
        np.testing.assert_allclose(posteriors(r), posteriors(by_id[r["id"]]), atol=1e-6)


def test_unreadable_inputs_are_skipped_counted_and_set_the_exit_status(trained, sertk_cli, tmp_path, user_error):
    _, _, model = trained
    good = write_wav(tmp_path / "good.wav", seconds=1.0)
    (tmp_path / "garbage.wav").write_bytes(b"RIFF not really a wave file")
    sf.write(str(tmp_path / "empty.wav"), np.zeros(0, np.float32), 16000)
    sf.write(str(tmp_path / "nan.wav"), np.full(16000, np.nan, np.float32), 16000, subtype="FLOAT")
    sf.write(str(tmp_path / "tiny.wav"), np.ones(40, np.float32) * 0.1, 16000)   # 2.5 ms: too short, skipped
    (tmp_path / "take.RAW").write_bytes(good.read_bytes())     # soundfile reads *.raw as headerless: TypeError
    sf.write(str(tmp_path / "huge.wav"), speech_like(1.0) * 1e20, 16000, subtype="FLOAT")   # finite, overflows
    args = [good, tmp_path / "garbage.wav", tmp_path / "empty.wav", tmp_path / "nan.wav", tmp_path / "tiny.wav",
            tmp_path / "missing.wav", good, tmp_path / "take.RAW", tmp_path / "huge.wav"]
    result = sertk_cli("infer", model, *args, "--out", tmp_path / "r.json")
    assert result.exit_code == 3, result.output
    doc = json.loads((tmp_path / "r.json").read_text())
    assert [r["id"] for r in doc["rows"]] == [str(good)]
    reasons = {s["id"]: s["reason"] for s in doc["skipped"]}
    assert len(doc["skipped"]) == 8 and "8 input(s) skipped (1 too short, 7 other)" in result.stderr
    assert reasons[str(tmp_path / "tiny.wav")].startswith("too short: 2.5 ms, under one 25 ms analysis window")
    assert "no such file or directory" in reasons[str(tmp_path / "missing.wav")]
    assert "not a readable audio file" in reasons[str(tmp_path / "garbage.wav")]
    assert "zero length" in reasons[str(tmp_path / "empty.wav")]
    assert "non-finite" in reasons[str(tmp_path / "nan.wav")]
    assert "headerless RAW audio" in reasons[str(tmp_path / "take.RAW")]
    assert reasons[str(tmp_path / "huge.wav")].startswith("stream 'logmel' is not finite for this audio (its samples peak at")
    assert [r["id"] for r in doc["rows"]] == [str(good)]
    assert "id given twice" in [s for s in doc["skipped"] if s["id"] == str(good)][0]["reason"]
    for s in doc["skipped"]:
        assert f"skipped {s['id']}: " in result.stderr
    scp = tmp_path / "list" / "wav.scp"
    scp.parent.mkdir()
    scp.write_text(f"a {good}\nb sox {good} -t wav - |\n")
    result = sertk_cli("infer", model, scp)
    assert result.exit_code == 3 and "skipped b: " in result.stderr and "pipes and ark specifiers" in result.stderr
    assert read_csv(result.stdout)[0]["id"] == "a"
    assert "all 2 input(s) were skipped" in user_error(sertk_cli("infer", model, tmp_path / "garbage.wav",
                                                                 tmp_path / "missing.wav"))


def test_wav_scp_speakers_and_the_speaker_pattern_agree(trained, sertk_cli, tmp_path):
    base, _, model = trained
    scp_rows = read_csv(sertk_cli("-q", "infer", model, base / "all" / "wav.scp").stdout)
    pattern = read_csv(sertk_cli("-q", "infer", model, base / "emodb" / "wav", "--speaker-pattern", r"wav/(\d\d)").stdout)
    assert len(scp_rows) == len(pattern) == 18
    by_name = {r["path"].rsplit("/", 1)[1]: r for r in pattern}
    for r in scp_rows:
        np.testing.assert_allclose(posteriors(r), posteriors(by_name[r["path"].rsplit("/", 1)[1]]), atol=1e-6)
    alone = read_csv(sertk_cli("-q", "infer", model, base / "emodb" / "wav").stdout)
    differs = any(np.abs(posteriors(a) - posteriors(by_name[a["path"].rsplit("/", 1)[1]])).max() > 1e-4 for a in alone)
    # per-speaker statistics are over all of a speaker's files; with no speakers each file is its own
    assert differs == (read_pack(model).normalization["mode"] == "speaker")


def test_vote_window_and_hop_options(trained, sertk_cli, tmp_path, user_error):
    _, _, model = trained
    clip = tmp_path / "clip.wav"
    sf.write(str(clip), speech_like(2.0), 16000)
    default = json.loads(sertk_cli("-q", "infer", model, clip, "--out", tmp_path / "a.json").exit_code == 0
                         and (tmp_path / "a.json").read_text())
    assert default["rule"] == "mean"
    inf = Inferencer.from_file(model, window=1.0)
    assert inf.segments.length == 1.0 and inf.segments.hop == 0.5
    wave = sf.read(str(clip), dtype="float32")[0]
    # 201 centred frames: 1 s windows every 0.5 s start at frames 0, 50, 100, and one more covers the tail
    np.testing.assert_allclose(inf.predict(wave, 16000).segment_times, [[0, 1], [0.5, 1.5], [1, 2], [1.01, 2.01]])
    assert len(Inferencer.from_file(model).predict(wave, 16000).segment_posteriors) == 19   # 0.3 s every 0.1 s
    voted = json.loads(sertk_cli("-q", "infer", model, clip, "--vote", "max", "--out", tmp_path / "b.json").exit_code
                       == 0 and (tmp_path / "b.json").read_text())
    assert voted["rule"] == "max"
    # the JSON says what decided its rows beyond the model: the windows actually used, the chunking
    assert default["settings"] == {"window": 0.3, "hop": 0.1, "tail": "end",
                                   "normalization": read_pack(model).normalization["mode"],
                                   **({"speaker_min_utts": 3} if read_pack(model).normalization["mode"] == "speaker"
                                      else {})}
    chunked = json.loads(sertk_cli("-q", "infer", model, clip, "--window", "1", "--segment", "vad", "--vad", "energy",
                                   "--min-silence", "0.2", "--out", tmp_path / "c.json").exit_code == 0
                         and (tmp_path / "c.json").read_text())
    assert chunked["settings"]["window"] == 1.0 and chunked["settings"]["hop"] == 0.5
    assert chunked["settings"]["chunks"] == {"threshold": 0.5, "min_chunk": 0.5, "max_chunk": 10.0,
                                             "min_silence": 0.2, "pad": 0.1}
    assert "--window and --hop must be positive" in user_error(sertk_cli("infer", model, clip, "--window", "0"))
    assert "--window and --hop must be positive" in user_error(sertk_cli("infer", model, clip, "--window", "inf"))
    assert "--window and --hop must be positive" in user_error(sertk_cli("infer", model, clip, "--hop", "inf"))
    assert "must end in .csv or .json" in user_error(sertk_cli("infer", model, clip, "--out", tmp_path / "r.txt"))
    assert "not a regular expression" in user_error(sertk_cli("infer", model, clip, "--speaker-pattern", "(x"))
    assert "min chunk" in user_error(sertk_cli("infer", model, clip, "--min-chunk", "20", "--segment", "vad"))
    assert sertk_cli("-q", "infer", model, clip, "--min-chunk", "20").exit_code == 0   # the VAD's: not used here


def test_an_input_whose_posteriors_overflow_gets_no_decision_the_others_theirs(trained, monkeypatch):
    from sertk.inference import inferencer as module
    _, _, model = trained
    inf = Inferencer.from_file(model, device="cpu")
    real = module.segment_posteriors

    def first_row_overflows(model, dataset, *args, **kwargs):
        post = real(model, dataset, *args, **kwargs)
        post[0] = np.nan
        return post
    monkeypatch.setattr(module, "segment_posteriors", first_row_overflows)
    utts = [Utterance("a", speech_like(1.0)), Utterance("b", speech_like(1.0, seed=1))]
    decisions, undecided = inf.decide(utts)
    assert list(undecided.values()) == ["the model's posteriors are not finite for this audio (an extreme input)"]
    assert set(decisions) | set(undecided) == {"a", "b"} and len(decisions) == 1


def test_python_api(trained, monkeypatch):
    _, _, model = trained
    from sertk import Inferencer as exported   # the import docs/inference.md shows
    inf = exported.from_file(model, device="cpu")
    assert isinstance(inf, Inferencer)
    wave = speech_like(1.5)
    mono = inf.predict(wave, 16000)
    stereo = inf.predict(np.stack([wave, wave], axis=1), 16000)
    np.testing.assert_allclose(mono.posteriors, stereo.posteriors, atol=1e-6)
    assert mono.label == CLASSES[int(np.argmax(mono.posteriors))] and mono.end == pytest.approx(1.5)
    np.testing.assert_allclose(mono.posteriors, mono.segment_posteriors.mean(axis=0), atol=1e-6)   # mean rule
    with pytest.raises(InferenceError, match="non-finite"):
        inf.predict(np.full(100, np.nan, np.float32), 16000)
    # what soundfile would give, not a guess: [channels, samples] is refused, integer PCM scaled to +-1
    with pytest.raises(InferenceError, match=r"looks like \[channels, samples\]; give \[samples\] or"):
        inf.predict(np.stack([wave, wave]), 16000)
    pcm = np.round(wave / np.abs(wave).max() * 20000).astype(np.int16)
    np.testing.assert_allclose(inf.predict(pcm, 16000).posteriors,
                               inf.predict(pcm.astype(np.float32) / 32768, 16000).posteriors, atol=1e-6)
    with pytest.raises(InferenceError, match="integer samples of type int8"):
        inf.predict(pcm.astype(np.int8), 16000)
    with pytest.raises(InferenceError, match="sample_rate must be a positive"):
        inf.predict(wave, 0)
    # a silent waveform is decided, with the warning predict_file and sertk infer give
    import logging
    warned = []
    handler = logging.Handler()
    handler.emit = lambda record: warned.append(record.getMessage())
    logging.getLogger("sertk").addHandler(handler)
    try:
        inf.predict(np.zeros(16000, np.float32), 16000)
        inf.predict(wave[::2], 8000)
    finally:
        logging.getLogger("sertk").removeHandler(handler)
    assert any(m.startswith("waveform: ") and "silent" in m for m in warned), warned
    assert "waveform: recorded at 8000 Hz, below the model's 16000 Hz: nothing above 4000 Hz" in "".join(warned)
    # a stream that gives no frame for a short utterance (none of the spectral ones: their frames are
    # centred) leaves that utterance without a decision, and the others with theirs
    from sertk.inference import inferencer as module
    real = module.compute_streams

    def no_frames_for_short(streams, audio, device):
        return {name: [x if len(a) > 100 else x[:0] for x, a in zip(rows, audio)]
                for name, rows in real(streams, audio, device).items()}
    monkeypatch.setattr(module, "compute_streams", no_frames_for_short)
    decisions, too_short = inf.decide([Utterance("a", wave), Utterance("b", wave[:50])])
    assert list(decisions) == ["a"] and "0.003 s is too short for one feature frame of stream 'logmel'" in too_short["b"]
    np.testing.assert_allclose(decisions["a"].posteriors, mono.posteriors, atol=1e-6)
    with pytest.raises(InferenceError, match="too short"):
        inf.predict(wave[:50], 16000)


# --- long recordings ----------------------------------------------------------------------------


def test_energy_vad_finds_the_known_chunks_of_a_3_minute_recording(tmp_path):
    truth = make_recording(tmp_path / "rec.wav", 180.0, seed=3)
    wave, sr = sf.read(str(tmp_path / "rec.wav"), dtype="float32")
    cfg = VadConfig("energy", pad=0.1)
    chunks = detect_speech(wave, sr, cfg)
    assert chunks.backend == "energy" and len(chunks.spans) == len(truth) > 30
    for (s, e), (ts, te) in zip(chunks.spans, truth):
        assert abs(s - (ts - cfg.pad)) < 0.06 and abs(e - (te + cfg.pad)) < 0.06


def test_chunk_rules():
    hop = 0.01
    probs = np.zeros(1000, np.float32)
    probs[100:300] = 0.9          # 2 s of speech ...
    probs[320:400] = 0.9          # ... a 0.2 s pause (< min_silence 0.3: one chunk) ...
    probs[400:420] = 0.4          # ... held by hysteresis (>= 0.5 - 0.15) ...
    probs[600:620] = 0.9          # a 0.2 s blip (< min_chunk 0.5 with pad 0.1: dropped)
    spans, dropped = speech_chunks(probs, hop, 10.0, VadConfig(pad=0.1))
    assert spans == [(pytest.approx(0.9), pytest.approx(4.3))] and dropped == 1
    long = np.full(3000, 0.9, np.float32)   # 30 s of speech -> three 10 s chunks, a 25 s one -> 8.33 s x 3
    assert len(speech_chunks(long, hop, 30.0, VadConfig(pad=0.0))[0]) == 3
    parts = speech_chunks(long[:2500], hop, 25.0, VadConfig(pad=0.0))[0]
    assert [round(e - s, 2) for s, e in parts] == [8.33, 8.33, 8.33] and parts[-1][1] == 25.0
    padded = speech_chunks(np.r_[np.ones(100), np.zeros(10), np.ones(100)].astype(np.float32), hop, 2.1,
                           VadConfig(pad=0.5, min_silence=0.05, min_chunk=0.1))[0]
    assert padded[0][1] == padded[1][0] == pytest.approx(1.05)   # padding stops half-way into the pause
    with pytest.raises(VadError):
        VadConfig(backend="webrtc")


def test_vad_chunks_and_timeline_from_the_command_line(trained, sertk_cli, tmp_path, user_error):
    _, _, model = trained
    truth = make_recording(tmp_path / "rec.wav", 60.0, seed=5, max_burst=14.0)
    result = sertk_cli("infer", model, tmp_path / "rec.wav", "--segment", "vad", "--vad", "energy",
                       "--max-chunk", "8", "--out", tmp_path / "r.csv", "--timeline", tmp_path / "t.png")
    assert result.exit_code == 0, result.output
    rows = read_csv((tmp_path / "r.csv").read_text())
    wave, sr = sf.read(str(tmp_path / "rec.wav"), dtype="float32")
    spans = detect_speech(wave, sr, VadConfig("energy", max_chunk=8.0)).spans
    assert [(float(r["start"]), float(r["end"])) for r in rows] == [(round(s, 3), round(e, 3)) for s, e in spans]
    assert [int(r["chunk"]) for r in rows] == list(range(1, len(rows) + 1))
    assert len(rows) > len(truth) and all(float(r["end"]) - float(r["start"]) <= 8.0 + 1e-6 for r in rows)
    png = (tmp_path / "t.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
    fixed = read_csv(sertk_cli("-q", "infer", model, tmp_path / "rec.wav", "--segment", "fixed", "--max-chunk",
                               "25").stdout)
    assert [(r["start"], r["end"]) for r in fixed] == [("0.000", "20.000"), ("20.000", "40.000"), ("40.000", "60.000")]
    short = read_csv(sertk_cli("-q", "infer", model, tmp_path / "rec.wav", "--segment", "fixed", "--max-chunk",
                               "0.4").stdout)   # below the VAD's --min-chunk default (0.5), which fixed chunks ignore
    assert len(short) == 150 and (short[0]["start"], short[0]["end"]) == ("0.000", "0.400")
    silent = tmp_path / "silent.wav"
    sf.write(str(silent), np.zeros(32000, np.float32), 16000)
    result = sertk_cli("infer", model, silent, tmp_path / "rec.wav", "--segment", "vad", "--vad", "energy")
    assert result.exit_code == 3 and "skipped" in result.stderr and "no speech found" in result.stderr
    assert "--timeline draws one recording" in user_error(
        sertk_cli("infer", model, silent, tmp_path / "rec.wav", "--timeline", tmp_path / "x.png"))


def test_infer_refuses_to_replace_files_it_did_not_write(trained, sertk_cli, user_error, tmp_path):
    _, _, model = trained
    write_wav(tmp_path / "a.wav", seconds=1.0)
    theirs = {"r.csv": b"name,grade\nana,1\n", "r.json": b'{"rows": []}\n',
              "t.png": b"\x89PNG\r\n\x1a\n\0\0\0\0IEND\xaeB`\x82"}   # a PNG that does not say sertk drew it
    for name, data in theirs.items():
        (tmp_path / name).write_bytes(data)
        option = "--timeline" if name.endswith(".png") else "--out"
        message = user_error(sertk_cli("infer", model, tmp_path / "a.wav", option, tmp_path / name))
        kind = "a timeline drawn by sertk infer" if option == "--timeline" else "a table written by sertk infer"
        assert message == (f"{tmp_path / name}: exists and is not {kind}; refusing to replace it "
                           f"(move it away or give another {option})")
        assert (tmp_path / name).read_bytes() == data
    assert "must end in .png" in user_error(
        sertk_cli("infer", model, tmp_path / "a.wav", "--timeline", tmp_path / "t.txt"))
    assert not (tmp_path / "t.txt").exists()


def test_a_timeline_without_matplotlib_is_refused_before_any_work(trained, sertk_cli, user_error, tmp_path,
                                                                  monkeypatch):
    import importlib.util
    _, _, model = trained
    write_wav(tmp_path / "a.wav", seconds=1.0)
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else
                        find_spec(name, *a))
    monkeypatch.setitem(sys.modules, "matplotlib", None)     # `import matplotlib` raises ImportError
    message = user_error(sertk_cli("infer", model, tmp_path / "a.wav", "--out", tmp_path / "r.csv",
                                   "--timeline", tmp_path / "t.png"))
    assert message == "--timeline needs matplotlib: pip install 'sertk[infer]'"
    assert not (tmp_path / "r.csv").exists()         # the table used to be written, then the run failed


def test_infer_replaces_its_own_earlier_outputs(trained, sertk_cli, tmp_path):
    from sertk.fsutil import png_software
    _, _, model = trained
    write_wav(tmp_path / "a.wav", seconds=1.0)
    # as sertk wrote its CSV before the note column
    (tmp_path / "old.csv").write_text("id,path,chunk,start,end,label,p_anger,p_sadness\n"
                                      "x,x.wav,,0.000,1.000,anger,1,0\n")
    for _ in range(2):
        for out in ("r.csv", "r.json", "old.csv"):
            result = sertk_cli("infer", model, tmp_path / "a.wav", "--out", tmp_path / out,
                               "--timeline", tmp_path / "T.PNG")
            assert result.exit_code == 0, result.output
    assert read_csv((tmp_path / "old.csv").read_text())[0]["note"] == ""
    assert json.loads((tmp_path / "r.json").read_text())["rows"][0]["id"] == str(tmp_path / "a.wav")
    assert png_software(tmp_path / "T.PNG") == "sertk infer --timeline"


@pytest.mark.skipif(not silero_available(), reason="silero-vad is not installed (pip install 'sertk[infer]')")
def test_silero_batched_pieces_agree_with_a_frame_by_frame_run():
    vad = SileroVad()
    wave = np.concatenate([np.zeros(8000, np.float32), speech_like(3.0), np.zeros(8000, np.float32)])
    batched = vad.probabilities(wave)   # shorter than one piece: one row, no warm-up
    vad.model.reset_states()
    with torch.inference_mode():
        single = np.array([float(vad.model(torch.from_numpy(wave[i * 512:(i + 1) * 512])[None], 16000))
                           for i in range(len(wave) // 512)])
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert torch.get_num_threads() >= 1 and vad.hop == 0.032


@pytest.mark.skipif(not (CORPORA / "emodb").is_dir(), reason=f"real corpus not available: {CORPORA / 'emodb'}")
@pytest.mark.skipif(not silero_available(), reason="silero-vad is not installed (pip install 'sertk[infer]')")
def test_silero_on_real_speech_finds_the_utterances():
    files = sorted((CORPORA / "emodb" / "wav").glob("*.wav"))[:40]
    parts, utts, n = [], [], 0
    for f in files:
        audio = sf.read(str(f), dtype="float32")[0]
        parts += [audio, np.zeros(16000, np.float32)]
        utts.append((n / 16000, (n + len(audio)) / 16000))
        n += len(audio) + 16000
    wave = np.concatenate(parts)
    chunks = detect_speech(wave, 16000, VadConfig("silero")).spans
    inside = [any(a - 0.15 <= s and e <= b + 0.15 for a, b in utts) for s, e in chunks]
    found = [any(a - 0.15 <= s and e <= b + 0.15 for s, e in chunks) for a, b in utts]
    assert sum(inside) >= 0.95 * len(chunks) and sum(found) >= 0.95 * len(utts)
    # the batched pieces decide speech frames as a frame-by-frame run does
    vad = SileroVad()
    batched = vad.probabilities(wave)
    vad.model.reset_states()
    with torch.inference_mode():
        frames = torch.from_numpy(wave[:len(batched) * 512]).view(-1, 512)
        single = np.array([float(vad.model(frames[i][None], 16000)) for i in range(len(frames))])
    assert ((batched >= 0.5) == (single >= 0.5)).mean() > 0.99


def test_batch_size_below_one_is_a_usage_error(trained, sertk_cli, tmp_path):
    _, _, model = trained
    clip = write_wav(tmp_path / "clip.wav", seconds=1.0)
    result = sertk_cli("infer", model, clip, "--batch-size", "0")
    assert result.exit_code == 2 and "--batch-size" in result.output and "Traceback" not in result.output


def test_a_majority_tie_is_broken_as_the_recipes_decode_breaks_it(trained, monkeypatch):
    """Every window votes another class: decode gives the tie to the highest mean posterior (the last window's
    class here), not to the earliest class."""
    import sertk.inference.inferencer as inferencer_module
    from sertk.decode import decide
    from sertk.inference.inferencer import Inferencer
    _, _, model = trained
    drawn = []

    def tied(model, dataset, *args):
        n = len(dataset)
        post = np.full((n, len(CLASSES)), 0.01, dtype=np.float32)
        for i in range(n):
            post[i, i], post[i, n - 1] = (0.4, 0.35) if i < n - 1 else (0.9, 0.9)
        drawn.append(post / post.sum(1, keepdims=True))
        return drawn[-1]
    monkeypatch.setattr(inferencer_module, "segment_posteriors", tied)
    inf = Inferencer(read_pack(model), device="cpu", rule="majority")
    wave = np.random.default_rng(0).normal(0, 0.1, int(0.5 * inf.sample_rate)).astype(np.float32)
    decision = inf.predict(wave, inf.sample_rate)
    n = len(drawn[0])
    assert 2 <= n <= len(CLASSES) and np.allclose(decision.posteriors[:n], 1 / n)   # every window another class
    assert decision.label == CLASSES[decide(drawn[0], "majority")] == CLASSES[n - 1]


def test_a_speaker_pattern_that_misses_keeps_the_wav_scps_speaker():
    from sertk.inference.inputs import Recording, assign_speakers
    recordings = [Recording("03a01Wa", "a.wav", "03"), Recording("x_take2", "b.wav", "08"), Recording("y", "c.wav", None)]
    out, unmatched = assign_speakers(recordings, pattern=r"^(\d\d)[a-z]")
    assert [r.speaker for r in out] == ["03", "08", None] and unmatched == 1
