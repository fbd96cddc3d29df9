"""The scattering medium: a fixed complex circular Gaussian transmission matrix ``H``.

``H`` has shape ``(n_out, n_in)``: camera pixels × DMD inputs. Its unit is chosen so that one
mirror gives a mean intensity of 1 at every pixel, ``E|H_jk|² = 1``.

**Element-wise definition.** Entry ``(j, k)`` is a function of ``(seed, j, k)`` only. Column
``k`` of row block ``b = j // ROW_BLOCK`` is one random stream: numpy's ``SFC64`` bit
generator seeded with a 64-bit hash of ``(seed, b, k)``, whose first ``ROW_BLOCK/2`` 64-bit
words, cut into little-endian 16-bit fields, give ``2·ROW_BLOCK`` uniform integers ``u``
(real parts of the block's rows, then imaginary parts). Each becomes an int8 level through the
inverse distribution function of a Gaussian quantised to ``QUANT_STD`` = 20 levels per standard
deviation::

    q = LEVELS[u],   LEVELS[u] = round(QUANT_STD · Φ⁻¹((u + ½) / 2¹⁶)),   u ∈ [0, 2¹⁶)
    H_jk = FIELD_PER_LSB · (q_re + i·q_im),   FIELD_PER_LSB = 1/√(2·mean(LEVELS²))

``LEVELS`` is the quantile function of ``round(20·z)``, ``z ~ N(0, 1)``, at resolution 2⁻¹⁶:
every level has the probability of the quantised Gaussian to within 2⁻¹⁶, the law is exactly
symmetric, its range is ±86 (4.3σ; the quantised Gaussian puts 1.5·10⁻⁵ of its mass beyond),
and ``FIELD_PER_LSB`` uses its exact variance, so ``E|H_jk|² = 1``. The streams are defined by
numpy's stable bit generators, independent of the platform and of torch.

So ``H`` can be generated in tiles on the fly with bounded memory and is *identical* whatever
the tiling (any request is cut out of the same fixed grid of streams); a column of the matrix
(the speckle of one mirror) is drawn only if some frame switches that mirror on.

**Exact arithmetic.** Because the entries are integers in LSB units and frames are binary, the
field ``Σ_k q_jk x_k`` is computed exactly (int8 matrix products with int32 accumulation, or
float32 while the sum stays below 2²⁴): tiled, dense, CPU and CUDA results are bit-identical,
whatever the summation order — and the integer product runs several times faster than a
complex float product.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from scipy.special import ndtri

from optdfa.errors import OptdfaError

#: standard deviation of one quadrature, in levels of the int8 entries
QUANT_STD = 20.0
#: resolution of the uniform integers that index the level table
_UNIFORM_BITS = 16
#: the quantile function of round(QUANT_STD·z) at resolution 2⁻¹⁶ (int8, symmetric)
LEVELS = np.rint(
    QUANT_STD * ndtri((np.arange(2**_UNIFORM_BITS, dtype=np.float64) + 0.5) / 2**_UNIFORM_BITS)
).astype(np.int8)
#: largest level magnitude (86)
LEVEL_MAX = int(np.abs(LEVELS).max())
#: field of one level, so that E|H|² = 1 exactly for the table's law
FIELD_PER_LSB = 1.0 / math.sqrt(2.0 * float(np.mean(LEVELS.astype(np.float64) ** 2)))
#: rows per random stream (the fixed generation grid: one stream per (row block, column))
ROW_BLOCK = 65536
#: a dense int8 copy of H is kept when it needs at most this many bytes (2 bytes per entry)
DEFAULT_DENSE_BUDGET = 1 << 30
#: columns generated per batch when streaming
_CHUNK = 32
#: up to this many frames, streamed products are summed in numpy (no torch kernel in the loop)
_NUMPY_FRAMES = 4

_MASK64 = (1 << 64) - 1


def _splitmix64(x: int) -> int:
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def stream_seed(seed: int, row_block: int, col: int) -> int:
    """The 64-bit seed of the stream holding column ``col`` of row block ``row_block``."""
    return _splitmix64(_splitmix64(_splitmix64(int(seed)) ^ int(row_block)) ^ int(col))


def stream_levels(seed: int, row_block: int, col: int, out: np.ndarray | None = None) -> np.ndarray:
    """Levels of column ``col`` in row block ``row_block``: int8 ``(2·ROW_BLOCK,)``, re then im."""
    words = np.random.SFC64(stream_seed(seed, row_block, col)).random_raw(ROW_BLOCK // 2)
    u = words.astype("<u8", copy=False).view("<u2")
    return np.take(LEVELS, u, out=out)


def generate_columns(seed: int, row_block: int, cols: Sequence[int]) -> torch.Tensor:
    """Columns ``cols`` of row block ``row_block``: int8 ``(len(cols), 2, ROW_BLOCK)`` (re, im)."""
    out = np.empty((len(cols), 2 * ROW_BLOCK), dtype=np.int8)
    for i, col in enumerate(cols):
        stream_levels(seed, row_block, col, out=out[i])
    return torch.from_numpy(out).view(len(cols), 2, ROW_BLOCK)


class TransmissionMatrix:
    """The element-wise seeded matrix ``H`` of shape ``(n_out, n_in)`` (see the module docstring).

    ``dense_budget_bytes`` bounds the dense int8 cache (2 bytes per entry); above it every
    product streams over the generation grid with memory ``O(n_frames·ROW_BLOCK + chunk)``.
    ``workers`` threads generate columns in parallel when streaming.
    """

    def __init__(
        self,
        n_out: int,
        n_in: int,
        seed: int,
        *,
        dense_budget_bytes: int = DEFAULT_DENSE_BUDGET,
        device: torch.device | str = "cpu",
        workers: int | None = None,
    ) -> None:
        if n_out < 1 or n_in < 1:
            raise OptdfaError(f"a transmission matrix needs n_out, n_in ≥ 1, got ({n_out}, {n_in})")
        self.n_out, self.n_in, self.seed = int(n_out), int(n_in), int(seed)
        self.device = torch.device(device)
        self.dense_budget_bytes = int(dense_budget_bytes)
        self.workers = max(1, workers if workers is not None else torch.get_num_threads())
        self._dense: torch.Tensor | None = None  # int8 (n_in, 2, n_out)

    # -- geometry ---------------------------------------------------------------------------
    @property
    def dense_bytes(self) -> int:
        """Bytes of a dense int8 copy (re and im)."""
        return 2 * self.n_out * self.n_in

    @property
    def fits_dense(self) -> bool:
        return self.dense_bytes <= self.dense_budget_bytes

    def _row_blocks(self, r0: int, r1: int) -> Iterator[tuple[int, int, int]]:
        """(block index, first row, end row) of the grid blocks covering rows [r0, r1)."""
        for b in range(r0 // ROW_BLOCK, (r1 - 1) // ROW_BLOCK + 1):
            yield b, max(r0, b * ROW_BLOCK), min(r1, (b + 1) * ROW_BLOCK)

    # -- entries ------------------------------------------------------------------------------
    def levels(
        self, rows: tuple[int, int] | None = None, cols: Sequence[int] | None = None
    ) -> torch.Tensor:
        """Integer levels of a block of ``H``: int8 ``(2, n_rows, n_cols)`` (re, im), generated on the fly."""
        r0, r1 = rows if rows is not None else (0, self.n_out)
        col_list = list(range(self.n_in)) if cols is None else [int(c) for c in cols]
        if not (0 <= r0 < r1 <= self.n_out) or any(not 0 <= c < self.n_in for c in col_list):
            raise OptdfaError(
                f"block rows {r0}:{r1} / columns out of range for H of shape ({self.n_out}, {self.n_in})"
            )
        out = torch.empty(2, r1 - r0, len(col_list), dtype=torch.int8)
        for b, a, e in self._row_blocks(r0, r1):
            seg = generate_columns(self.seed, b, col_list)  # (c, 2, ROW_BLOCK)
            out[:, a - r0 : e - r0, :] = seg[:, :, a - b * ROW_BLOCK : e - b * ROW_BLOCK].permute(
                1, 2, 0
            )
        return out.to(self.device)

    def entries(
        self, rows: tuple[int, int] | None = None, cols: Sequence[int] | None = None
    ) -> torch.Tensor:
        """A block of ``H`` as complex64 ``(n_rows, n_cols)`` (field per mirror)."""
        q = self.levels(rows, cols).to(torch.float32) * FIELD_PER_LSB
        return torch.complex(q[0], q[1])

    def dense_levels(self) -> torch.Tensor:
        """All of ``H`` as int8 levels ``(n_in, 2, n_out)``, cached (error above the budget)."""
        if self._dense is None:
            if not self.fits_dense:
                raise OptdfaError(
                    f"a dense copy of H ({self.n_out}×{self.n_in}) needs {self.dense_bytes / 2**20:.0f} MiB, "
                    f"above the budget of {self.dense_budget_bytes / 2**20:.0f} MiB"
                )
            cols = range(self.n_in)
            dense = torch.empty(self.n_in, 2, self.n_out, dtype=torch.int8)
            for b, a, e in self._row_blocks(0, self.n_out):
                for c0 in range(0, self.n_in, _CHUNK):
                    chunk = cols[c0 : c0 + _CHUNK]
                    seg = generate_columns(self.seed, b, chunk)
                    dense[c0 : c0 + len(chunk), :, a:e] = seg[
                        :, :, a - b * ROW_BLOCK : e - b * ROW_BLOCK
                    ]
            self._dense = dense.to(self.device)
        return self._dense

    def release(self) -> None:
        """Drop the dense cache."""
        self._dense = None

    # -- products -----------------------------------------------------------------------------
    def product(self, frames: torch.Tensor) -> torch.Tensor:
        """``Σ_k q_jk x_k`` for binary frames ``(n, n_in)``: float32 ``(n, 2, n_out)`` in LSB units.

        Exact (integer-valued) whenever the sums stay below 2²⁴ in magnitude; dense when the
        matrix fits the budget, else streamed over the generation grid.
        """
        frames = frames.to(self.device)
        if frames.ndim != 2 or frames.shape[1] != self.n_in:
            raise OptdfaError(f"frames must have shape (n, {self.n_in}), got {tuple(frames.shape)}")
        if self.fits_dense:
            q = self.dense_levels().view(self.n_in, 2 * self.n_out)
            acc = integer_matmul(frames, q)
            return acc.view(-1, 2, self.n_out)
        return self._streamed_product(frames)

    def _streamed_product(self, frames: torch.Tensor) -> torch.Tensor:
        """Row block by row block, columns generated and summed in worker threads.

        A few frames (the full-scale case) are summed in numpy inside the workers, so the loop
        runs no torch kernel (whose OpenMP threads would spin against the generators); larger
        batches use an int8 product per chunk.
        """
        n = frames.shape[0]
        out = torch.empty(n, 2, self.n_out, dtype=torch.float32, device=self.device)
        on = frames.cpu().numpy().astype(bool, copy=False)
        active = np.flatnonzero(on.any(axis=0))
        chunks = [active[i : i + _CHUNK] for i in range(0, len(active), _CHUNK)]
        in_numpy = n <= _NUMPY_FRAMES
        x8 = frames.to(torch.int8)

        def work(b: int, chunk: np.ndarray) -> np.ndarray | torch.Tensor:
            levels = generate_columns(self.seed, b, chunk.tolist()).view(len(chunk), -1)
            if not in_numpy:
                return levels
            lv = levels.numpy()
            return np.stack([lv[on[f, chunk]].sum(axis=0, dtype=np.int32) for f in range(n)])

        with ThreadPoolExecutor(self.workers) as pool:
            for b, a, e in self._row_blocks(0, self.n_out):
                acc = np.zeros((n, 2 * ROW_BLOCK), dtype=np.int32)
                acc_t = torch.from_numpy(acc)
                # generate in parallel, accumulate in submission order (the sum is exact anyway)
                for start in range(0, len(chunks), self.workers):
                    batch = chunks[start : start + self.workers]
                    futures = [pool.submit(work, b, c) for c in batch]
                    for chunk, fut in zip(batch, futures, strict=True):
                        part = fut.result()
                        if in_numpy:
                            np.add(acc, part, out=acc)
                        else:
                            acc_t += _int_mm(x8[:, chunk.tolist()].cpu(), part)
                lo, hi = a - b * ROW_BLOCK, e - b * ROW_BLOCK
                block = acc_t.view(n, 2, ROW_BLOCK)[:, :, lo:hi].float()
                out[:, :, a:e] = block.to(self.device)
        return out


def _int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """int8 ``(m, k) @ (k, n)`` → int32, exact."""
    if a.device.type == "cuda" and (a.shape[0] <= 16 or a.shape[1] % 8 or b.shape[1] % 8):
        # cuBLAS int8 kernels need m > 16 and multiples of 8 (and CUDA has no int32 matmul):
        # a float product is exact while the sums stay below the mantissa (2^24, 2^53)
        dtype = torch.float32 if a.shape[1] * LEVEL_MAX < 2**24 else torch.float64
        return (a.to(dtype) @ b.to(dtype)).to(torch.int32)
    return torch._int_mm(a.contiguous(), b.contiguous())


def integer_matmul(frames: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
    """Binary frames ``(n, k)`` @ int8 levels ``(k, m)`` → float32 ``(n, m)``, exactly.

    Few inputs: a float32 product (exact while ``k·86 < 2²⁴``); many: int8 × int8 → int32.
    """
    k = frames.shape[1]
    if k <= 64 and k * LEVEL_MAX < 2**24:
        return frames.to(torch.float32) @ levels.to(torch.float32)
    return _int_mm(frames.to(torch.int8), levels).to(torch.float32)
