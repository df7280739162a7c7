import numpy as np

from fanout.sources.beep import Beep


def loudness(samples: np.ndarray) -> float:
    return float(np.sqrt(np.mean(samples.astype(np.float64) ** 2)))


def test_a_tone_in_the_first_200_ms_of_every_second_and_silence_after() -> None:
    beep = Beep()
    second = beep.samples(1_700_000_000.0, 48_000)[0]
    left, right = second[0::2], second[1::2]
    assert np.array_equal(left, right)
    assert loudness(left[480:9120]) > 10_000  # 10..190 ms
    assert loudness(left[9700:]) == 0
    spectrum = np.abs(np.fft.rfft(left[:9600]))
    assert abs(np.argmax(spectrum) * 48_000 / 9600 - 440) <= 5


def test_the_tone_ramps_in_instead_of_clicking() -> None:
    samples = Beep().samples(5.0, 96)[0][0::2]
    assert abs(int(samples[1])) < 300
    assert np.max(np.abs(np.diff(samples.astype(np.int32)))) < 1000


def test_consecutive_blocks_join_seamlessly() -> None:
    beep = Beep()
    whole = beep.samples(1000.9, 960 * 20)
    blocks = [beep.samples(1000.9 + index * 0.02, 960) for index in range(20)]
    assert np.abs(np.concatenate(blocks, axis=1).astype(np.int32) - whole).max() <= 1


def test_shape_is_one_row_of_interleaved_channels() -> None:
    assert Beep(channels=2).samples(0.0, 960).shape == (1, 1920)
    assert Beep(channels=1).samples(0.0, 960).shape == (1, 960)
    assert Beep().samples(0.0, 960).dtype == np.int16
