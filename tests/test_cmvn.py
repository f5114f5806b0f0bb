"""CMVN: global statistics from train only, per-speaker statistics, state dicts and files."""
import numpy as np
import pytest
import torch

from sertk.errors import FeatureError
from sertk.features.cmvn import GlobalCMVN, NoCMVN, SpeakerCMVN, cmvn_from_state_dict, make_cmvn, plain_state


def _feats(n_utts=12, dim=5, seed=0):
    """utt -> [frames, dim] float32 with a speaker-dependent offset and scale, far from zero mean."""
    rng = np.random.default_rng(seed)
    feats, utt2spk = {}, {}
    for i in range(n_utts):
        spk = f"spk{i % 3}"
        utt = f"{spk}-u{i:02d}"
        offset, scale = 100.0 + 10 * (i % 3), 1.0 + (i % 3)
        feats[utt] = (offset + scale * rng.standard_normal((20 + 7 * i, dim))).astype(np.float32)
        utt2spk[utt] = spk
    return feats, utt2spk


class OnlyThese(dict):
    """A feats mapping that fails when an utterance outside `allowed` is read."""

    def __init__(self, feats, allowed):
        super().__init__(feats)
        self.allowed = set(allowed)

    def __getitem__(self, utt):
        assert utt in self.allowed, f"read {utt}, which is not a training utterance"
        return super().__getitem__(utt)


def test_global_stats_equal_numpy_over_concatenated_frames():
    feats, _ = _feats()
    cmvn = GlobalCMVN().fit(feats.values())
    frames = np.concatenate(list(feats.values())).astype(np.float64)
    assert cmvn.count == len(frames)
    np.testing.assert_allclose(cmvn.mean, frames.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(cmvn.var, frames.var(axis=0), rtol=1e-10)
    normed = cmvn.apply(frames.astype(np.float32))
    assert normed.dtype == np.float32
    np.testing.assert_allclose(normed.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(normed.std(axis=0), 1, atol=1e-4)


def test_global_fit_uses_only_train_utterances():
    feats, utt2spk = _feats()
    train = [u for u, s in utt2spk.items() if s != "spk2"]   # spk2 is the fold's test speaker
    cmvn = make_cmvn("global", OnlyThese(feats, train), utt2spk, train_utts=train)
    ref = np.concatenate([feats[u] for u in train]).astype(np.float64)
    np.testing.assert_allclose(cmvn.mean, ref.mean(axis=0), rtol=1e-12)
    everything = GlobalCMVN().fit(feats.values())
    assert not np.allclose(cmvn.mean, everything.mean)   # the test speaker would have shifted it
    test_utt = next(u for u, s in utt2spk.items() if s == "spk2")
    np.testing.assert_allclose(cmvn.normalize(feats[test_utt], test_utt), cmvn.apply(feats[test_utt]))


def test_global_needs_train_utts():
    feats, utt2spk = _feats()
    with pytest.raises(FeatureError, match="training utterances"):
        make_cmvn("global", feats, utt2spk)


def test_variance_floor_keeps_constant_dims_finite():
    x = np.ones((50, 3), dtype=np.float32)
    x[:, 0] = np.arange(50)
    cmvn = GlobalCMVN(var_floor=1e-4, eps=0.0).fit([x])
    out = cmvn.apply(x)
    assert np.isfinite(out).all()
    np.testing.assert_array_equal(out[:, 1:], 0)
    np.testing.assert_allclose(GlobalCMVN(var_floor=1e-4, eps=0.0).fit([x + 1e-3 * (np.arange(50) % 2)[:, None]])
                               .apply(x)[:, 1], (1 - (1 + 5e-4)) / np.sqrt(1e-4), rtol=1e-4)


def test_mean_only_and_torch_input():
    feats, _ = _feats()
    cmvn = GlobalCMVN(norm_vars=False).fit(feats.values())
    x = next(iter(feats.values()))
    np.testing.assert_allclose(cmvn.apply(x), x - cmvn.mean.astype(np.float32), rtol=1e-6)
    full = GlobalCMVN().fit(feats.values())
    got = full.apply(torch.from_numpy(x))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
    np.testing.assert_allclose(got.numpy(), full.apply(x), rtol=1e-6, atol=1e-6)


def test_bad_inputs():
    with pytest.raises(FeatureError, match="no frames"):
        GlobalCMVN().fit([])
    with pytest.raises(FeatureError, match="dim 4 differs from 3"):
        GlobalCMVN().fit([np.zeros((2, 3)), np.zeros((2, 4))])
    with pytest.raises(FeatureError, match="before fit"):
        GlobalCMVN().apply(np.zeros((2, 3)))
    with pytest.raises(FeatureError, match="unknown CMVN mode 'utterance'"):
        make_cmvn("utterance", {}, {})


@pytest.mark.parametrize("as_tensor", [False, True])
def test_features_of_another_width_than_the_statistics_are_refused(as_tensor):
    """Not numpy's broadcast error (or, for one column, a silent broadcast): e.g. a 20-band dump decoded with the
    16-band statistics of a model's checkpoint."""
    feats, utt2spk = _feats(dim=16)
    wide = np.zeros((81, 20), dtype=np.float32)
    for cmvn in (GlobalCMVN().fit(feats.values()), make_cmvn("speaker", feats, utt2spk)):
        x = torch.from_numpy(wide) if as_tensor else wide
        with pytest.raises(FeatureError, match="CMVN: features with 20 values per row, statistics of 16"):
            cmvn.normalize(x, "spk0-u00")
        with pytest.raises(FeatureError, match="features with 1 values per row, statistics of 16"):
            cmvn.normalize(wide[:, :1], "spk0-u00")


def test_speaker_mode_normalises_each_speaker_with_its_own_frames():
    feats, utt2spk = _feats()
    cmvn = make_cmvn("speaker", feats, utt2spk)
    assert isinstance(cmvn, SpeakerCMVN) and sorted(cmvn.speakers) == ["spk0", "spk1", "spk2"]
    for spk in cmvn.speakers:
        utts = [u for u, s in utt2spk.items() if s == spk]
        frames = np.concatenate([cmvn.normalize(feats[u], u) for u in utts])
        np.testing.assert_allclose(frames.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(frames.std(axis=0), 1, atol=1e-4)
        own = np.concatenate([feats[u] for u in utts]).astype(np.float64)
        np.testing.assert_allclose(cmvn.speakers[spk].mean, own.mean(axis=0), rtol=1e-12)
    with pytest.raises(FeatureError, match="no speaker"):
        cmvn.normalize(feats["spk0-u00"], "someone-else")


def test_speaker_fit_on_a_subset_of_utterances():
    feats, utt2spk = _feats()
    some = ["spk0-u00", "spk0-u03", "spk1-u01"]
    cmvn = SpeakerCMVN(utt2spk).fit(OnlyThese(feats, some), utts=some)
    assert sorted(cmvn.speakers) == ["spk0", "spk1"]
    with pytest.raises(FeatureError, match="no statistics for speaker 'spk2'"):
        cmvn.normalize(feats["spk2-u02"], "spk2-u02")


def test_none_mode_is_the_identity():
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    cmvn = make_cmvn("none", {}, {})
    assert isinstance(cmvn, NoCMVN) and cmvn.normalize(x, "u") is x
    assert isinstance(cmvn_from_state_dict(cmvn.state_dict()), NoCMVN)


@pytest.mark.parametrize("mode", ["global", "speaker"])
def test_state_dict_round_trip_through_a_checkpoint_and_npz(mode, tmp_path):
    feats, utt2spk = _feats()
    cmvn = make_cmvn(mode, feats, utt2spk, train_utts=list(feats)[:6], eps=1e-6)
    torch.save({"cmvn": cmvn.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt", weights_only=True)["cmvn"]   # plain types only
    restored = cmvn_from_state_dict(state)
    cmvn.save(tmp_path / "cmvn.npz")
    from_file = type(cmvn).load(tmp_path / "cmvn.npz")
    for utt, x in feats.items():
        expected = cmvn.normalize(x, utt)
        np.testing.assert_array_equal(restored.normalize(x, utt), expected)
        np.testing.assert_array_equal(from_file.normalize(x, utt), expected)
    assert plain_state(from_file.state_dict()) == plain_state(cmvn.state_dict())
    # statistics are tensors in the state (a checkpoint pickles lists element by element), lists in plain_state
    stats = cmvn.state_dict() if mode == "global" else next(iter(cmvn.state_dict()["speakers"].values()))
    assert isinstance(stats["mean"], torch.Tensor) and stats["mean"].dtype == torch.float64
    assert isinstance(plain_state(stats)["mean"], list)


def test_load_wrong_kind_of_file(tmp_path):
    feats, utt2spk = _feats()
    GlobalCMVN().fit(feats.values()).save(tmp_path / "g.npz")
    with pytest.raises(FeatureError, match="holds 'global' CMVN statistics, not 'speaker'"):
        SpeakerCMVN.load(tmp_path / "g.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(FeatureError, match="not CMVN statistics"):
        GlobalCMVN.load(tmp_path / "junk.npz")
    with pytest.raises(FeatureError, match="must be fitted"):
        GlobalCMVN().save(tmp_path / "unfitted.npz")


def test_a_speaker_with_too_few_utterances_gets_the_training_statistics_however_many_frames():
    """One file given to `sertk infer` is its own speaker: its own frames' statistics would normalise away what
    the model reads (crnn on EmoDB dev: UA 28.7 against 64.5 with the fallback, sertk.features.cmvn)."""
    rng = np.random.default_rng(0)
    feats = {f"a{i}": rng.normal(3, 2, (50, 4)) for i in range(4)}
    feats |= {"b0": rng.normal(0, 1, (400, 4))} | {f"c{i}": rng.normal(1, 1, (30, 4)) for i in range(3)}
    utt2spk = {u: u[0] for u in feats}
    train_utts = [f"a{i}" for i in range(4)]
    cmvn = make_cmvn("speaker", feats, utt2spk=utt2spk, train_utts=train_utts, min_rows=10, min_utts=3)
    training = GlobalCMVN().fit(feats[u] for u in train_utts)
    np.testing.assert_allclose(cmvn.normalize(feats["b0"], "b0"), training.apply(feats["b0"]))   # 400 frames, 1 utt
    np.testing.assert_allclose(cmvn.normalize(feats["c0"], "c0"), cmvn.speakers["c"].apply(feats["c0"]))   # 3 utts
    restored = SpeakerCMVN.from_state_dict(cmvn.state_dict())
    np.testing.assert_allclose(restored.normalize(feats["b0"], "b0"), training.apply(feats["b0"]))
    old = make_cmvn("speaker", feats, utt2spk=utt2spk, train_utts=train_utts, min_rows=10)   # min_utts 1: as before
    np.testing.assert_allclose(old.normalize(feats["b0"], "b0"), old.speakers["b"].apply(feats["b0"]))
    assert "min_utts" not in old.state_dict()   # states of runs before the rule read as they were written
