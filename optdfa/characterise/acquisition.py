"""The exposure ladder: dark frames and repeated bright frames at exposures ``t_nom·2^k``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from optdfa.characterise.targets import Target

#: the ladder goes down until the predicted mean signal is at most this (DN)
LOW_SIGNAL_DN = 1.0
#: the dark and the series up to the nominal exposure take this many times ``repeats`` frames
LOW_SERIES_REPEAT_FACTOR = 2
#: frames shown in a row when the low series are interleaved
CHUNK = 16
#: the ladder goes up until this share of the pixels saturates
SATURATED_STOP = 0.30
#: a pixel is saturated when its signal grows by less than this share of the exposure step
GROWTH_SATURATED = 0.25


# -- acquisition ------------------------------------------------------------------------------------
@dataclass
class Series:
    """``repeats`` frames ``(R, pixels)`` of one input at one exposure (raw output, float64)."""

    exposure_s: float
    lit: bool
    frames: np.ndarray
    #: frames shown in a row (0: all); chunks of interleaved series are shown in turn
    chunk: int = 0
    #: frames the device showed from the first to the last frame of the series
    span_frames: int = 0

    @property
    def span(self) -> int:
        return self.span_frames or self.frames.shape[0]

    @property
    def mean(self) -> np.ndarray:
        return self.frames.mean(axis=0)


def _show(target: Target, lit: bool, n: int) -> np.ndarray:
    x = torch.full((n, target.device.n_in), lit, dtype=torch.bool)
    return target.device.transform(x).to(torch.float64).numpy()


def saturated_pixels(
    previous: np.ndarray, current: np.ndarray, ratio: float, floor: float
) -> np.ndarray:
    """Pixels whose signal (above black) grew by less than ``GROWTH_SATURATED`` of the exposure
    step ``ratio`` although it was measurably bright (above ``floor``)."""
    bright = previous > floor
    return bright & (current < previous * (1.0 + GROWTH_SATURATED * (ratio - 1.0)))


def acquire(
    target: Target,
    *,
    repeats: int = 64,
    max_exposure_factor: float = 64.0,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[Series], list[Series]]:
    """Dark series (shortest and longest exposure) and the lit exposure ladder (module doc)."""
    say = progress or (lambda _msg: None)
    t0 = target.nominal_exposure_s
    t0 = target.set_exposure(t0)
    probe_dark = _show(target, False, 8).mean()
    probe = _show(target, True, 8).mean() - probe_dark
    lows: list[float] = []
    t = t0 / 2
    while t >= target.min_exposure_s:
        lows.append(t)
        if probe * t / t0 <= LOW_SIGNAL_DN:
            break
        t /= 2
    exposures = sorted(lows)
    # The dark, the below-nominal and the nominal series feed the read-noise likelihood, which
    # shares one rate per pixel between them: they are shown interleaved, CHUNK frames at a
    # time, so a drifting medium moves every series alike; and with twice the frames (the
    # per-pixel rates bias σ_r by about 1/frames).
    low_repeats = LOW_SERIES_REPEAT_FACTOR * repeats
    exposures = [*exposures, t0]
    block = [(exposures[0], False), *((t, True) for t in exposures)]
    chunks: list[list[np.ndarray]] = [[] for _ in block]
    real_t = [0.0] * len(block)
    say(f"dark and {len(exposures)} exposures up to the nominal one, interleaved")
    for _ in range(max(1, low_repeats // CHUNK)):
        for i, (t, lit) in enumerate(block):
            real_t[i] = target.set_exposure(t)
            chunks[i].append(_show(target, lit, CHUNK))
    span = sum(sum(c.shape[0] for c in ch) for ch in chunks)
    low_series = [
        Series(real_t[i], lit, np.concatenate(chunks[i]), chunk=CHUNK, span_frames=span)
        for i, (_, lit) in enumerate(block)
    ]
    darks = [low_series[0]]
    black = float(darks[0].frames.mean())
    ladder: list[Series] = low_series[1:]
    floor = signal_floor(darks[0])
    while True:
        if len(ladder) >= 2:
            prev, cur = ladder[-2], ladder[-1]
            sat = saturated_pixels(
                prev.mean - black, cur.mean - black, cur.exposure_s / prev.exposure_s, floor
            )
            if sat.mean() >= SATURATED_STOP:
                break
        nxt = ladder[-1].exposure_s * 2
        if nxt > t0 * max_exposure_factor * (1 + 1e-9):
            break
        real = target.set_exposure(nxt)
        say(f"exposure {real * 1e6:.4g} µs")
        ladder.append(Series(real, True, _show(target, True, repeats)))
    t_high = ladder[-1].exposure_s
    target.set_exposure(t_high)
    say(f"dark frames at {t_high * 1e6:.4g} µs")
    darks.append(Series(t_high, False, _show(target, False, repeats)))
    target.set_exposure(t0)
    return darks, ladder


def is_integer_output(series: list[Series]) -> bool:
    return all(np.array_equal(s.frames, np.round(s.frames)) for s in series)


def signal_floor(dark: Series) -> float:
    """Smallest signal told apart from the dark level (DN): 3σ of a dark pixel, at least 1 DN
    for integer output."""
    sigma = float(dark.frames.std(axis=0).mean())
    integer = np.array_equal(dark.frames, np.round(dark.frames))
    return max(3 * sigma, 1.0 if integer else 0.0, 1e-12)
