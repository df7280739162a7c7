import time

import av
import numpy as np
import pytest

from fanout.sources.pattern import BARS_RGB, TestPattern, clock_text


def rgb(planes: np.ndarray) -> np.ndarray:
    return av.VideoFrame.from_ndarray(planes, format="yuv420p").to_ndarray(format="rgb24")


def test_frame_is_yuv420p_of_the_asked_size() -> None:
    planes = TestPattern(640, 360).render(0, 0.0)
    assert planes.shape == (540, 640)
    assert planes.dtype == np.uint8
    assert rgb(planes).shape == (360, 640, 3)


def test_colour_bars_on_top_scroll_left_4_pixels_a_frame() -> None:
    pattern = TestPattern(640, 360)
    first = rgb(pattern.render(0, 0.0).copy())
    second = rgb(pattern.render(1, 0.0).copy())
    row = 20
    for bar, colour in enumerate(BARS_RGB):
        assert np.abs(first[row, bar * 80 + 40].astype(int) - colour).max() <= 6
    assert np.array_equal(second[row, :-4], first[row, 4:])
    assert not np.array_equal(second[row], first[row])


def test_grey_ramp_at_the_bottom() -> None:
    picture = rgb(TestPattern(640, 360).render(0, 0.0))
    row = picture[350, :, 1].astype(int)
    assert row[0] < 20 and row[638] > 235
    assert np.all(np.diff(row[::16]) >= 0)


def test_caption_shows_the_time_and_changes_with_it() -> None:
    pattern = TestPattern(640, 360)
    now = time.time()
    one = pattern.render(0, now).copy()
    same = pattern.render(0, now).copy()
    later = pattern.render(0, now + 1.234).copy()
    assert np.array_equal(one, same)
    changed_rows = np.nonzero(np.any(one[:360] != later[:360], axis=1))[0]
    changed_columns = np.nonzero(np.any(one[:360] != later[:360], axis=0))[0]
    assert 100 < changed_rows.min() and changed_rows.max() < 260  # the middle, where the caption is
    assert 100 < changed_columns.min() and changed_columns.max() < 540
    caption = one[changed_rows.min() : changed_rows.max(), changed_columns.min() : changed_columns.max()]
    assert np.mean(caption < 40) > 0.5 and np.mean(caption > 200) > 0.05  # light text on a dark box


def test_frame_counter_changes_the_caption() -> None:
    pattern = TestPattern(640, 360, pixels_per_frame=0)
    assert not np.array_equal(pattern.render(1, 0.0).copy(), pattern.render(2, 0.0))


def test_clock_text() -> None:
    wall = time.mktime((2024, 5, 6, 7, 8, 9, 0, 0, -1)) + 0.0456
    assert clock_text(wall) == "07:08:09.045"


@pytest.mark.parametrize("size", [(1280, 720), (320, 180), (160, 90), (480, 270), (64, 64)])
def test_other_sizes(size: tuple[int, int]) -> None:
    width, height = size
    assert TestPattern(width, height).render(12345, 0.0).shape == (height * 3 // 2, width)


@pytest.mark.parametrize("size", [(641, 360), (640, 361), (32, 32)])
def test_odd_or_tiny_sizes_are_refused(size: tuple[int, int]) -> None:
    with pytest.raises(ValueError):
        TestPattern(*size)
