import numpy as np
import pytest

from sertk.features.segments import SegmentConfig, SegmentError, cut, segment_bounds, segment_id


def test_short_utterance_is_one_padded_segment():
    assert segment_bounds(50, 200, 100) == [(0, 50)]
    window, mask = cut(np.ones((50, 3), np.float32), 0, 50, 200)
    assert window.shape == (200, 3) and mask.sum() == 50 and not window[50:].any()


def test_exact_length_is_one_segment():
    assert segment_bounds(200, 200, 100) == [(0, 200)]


def test_tail_is_covered_by_a_window_aligned_to_the_end():
    assert segment_bounds(350, 200, 100) == [(0, 200), (100, 300), (150, 350)]


def test_tail_drop_leaves_out_frames_after_the_last_full_window():
    assert segment_bounds(350, 200, 100, tail="drop") == [(0, 200), (100, 300)]
    assert segment_bounds(150, 200, 100, tail="drop") == [(0, 150)]   # a short utterance still counts
    assert SegmentConfig.from_config({"length": 2.0, "hop": 1.0}).tail == "end"   # older configs
    with pytest.raises(SegmentError, match="segments.tail must be one of end, drop, not 'last'"):
        SegmentConfig(2.0, 0.4, "last")


def test_no_extra_window_when_the_hop_lands_on_the_end():
    assert segment_bounds(400, 200, 100) == [(0, 200), (100, 300), (200, 400)]


@pytest.mark.parametrize("frames", [1, 199, 201, 517, 1000])
def test_every_frame_is_covered_and_windows_are_full(frames):
    bounds = segment_bounds(frames, 200, 80)
    covered = np.zeros(frames, bool)
    for s, e in bounds:
        covered[s:e] = True
        assert e - s == min(200, frames) and 0 <= s < e <= frames
    assert covered.all()


def test_seconds_to_frames_and_errors():
    assert SegmentConfig(2.0, 0.4).frames(0.010) == (200, 40)
    with pytest.raises(ValueError, match="at least one frame"):
        SegmentConfig(2.0, 0.001).frames(0.010)
    with pytest.raises(ValueError):
        segment_bounds(0, 10, 5)


def test_segment_ids_sort_in_time_order_and_name_the_utterance():
    ids = [segment_id("spk1-utt", s, e) for s, e in segment_bounds(1000, 200, 100)]
    assert ids == sorted(ids) and ids[0] == "spk1-utt-000000-000200"
