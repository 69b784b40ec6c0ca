"""Chunk-by-chunk separation with the offline model's exact output, delayed by ``n_fft - 1`` samples.

Because the LSTM is unidirectional and BatchNorm in eval mode is a fixed per-bin affine map, each STFT frame's mask
depends only on that frame and the LSTM state carried from earlier frames. :class:`StreamingSeparator` keeps three
buffers between calls:

* the input tail not yet consumed by a full frame (starting with the ``n_fft // 2`` zeros of the centred STFT);
* the LSTM ``(h, c)`` state;
* the overlap-add tail of frames whose later neighbours are still to come (the window-square normalisation of
  each finished block follows from how many frames overlap it, so it is precomputed, not accumulated).

Frames are processed as soon as they are complete, through the same steps as a whole clip (on CPU the LSTM runs in
:mod:`.cpu_kernels`, whose per-call set-up is a few microseconds, so even one frame per call is cheap).

Latency: frame ``t`` covers input samples ``[t*hop - n_fft/2, t*hop + n_fft/2)`` and output sample ``n`` is final
once every frame overlapping it is computed. After ``N`` input samples the finished output runs to between
``N - (n_fft - 1)`` and ``N - (n_fft - hop)`` samples, depending on where ``N`` falls in the hop grid. To return
exactly as many samples as it receives, whatever the chunk sizes, the separator delays its output by the worst
case, ``latency_samples = n_fft - 1`` (511 samples, 11.6 ms at 44.1 kHz): ``output[n] = offline[n - 511]``, zeros
before. :meth:`StreamingSeparator.flush` returns the last ``latency_samples`` samples, so the concatenation of all
:meth:`~StreamingSeparator.process` outputs and :meth:`~StreamingSeparator.flush` equals
``concat(zeros(latency_samples), offline_output)`` (within float rounding, about 1e-6).
"""

from __future__ import annotations

import numpy as np
import torch

from cough_pipeline.separation.model import CoughSeparator, InferenceSeparator, intra_op_threads


class StreamingSeparator:
    """Stateful chunk processor around a trained separator (its eval-mode, folded :class:`InferenceSeparator`).

    ``process(chunk)`` takes any number of mono samples (numpy array or 1-D tensor) and returns the same number of
    output samples (same type; numpy float32 for numpy input), delayed by :attr:`latency_samples`. ``flush()`` ends
    the stream: it zero-pads the input exactly as the offline STFT does and returns the remaining
    ``latency_samples`` samples. :meth:`reset` starts a new stream.

    With ``single_threaded`` (the default, CPU only) each call runs with one torch intra-op thread in the calling
    thread (:func:`~.model.intra_op_threads`, restored afterwards): per-chunk tensors are tiny, and OpenMP-parallel
    kernels on them gain nothing on an idle machine and lose several-fold to thread barriers on a loaded one
    (``benchmarks/results/separation.json`` has the real-time factors per chunk size).

    Args:
        model: the trained separator, or its folded inference copy.
        single_threaded: run each call on one intra-op thread (CPU only).

    Shape:
        Each chunk ``(samples,)`` in; ``(samples,)`` out.
    """

    def __init__(self, model: CoughSeparator | InferenceSeparator, single_threaded: bool = True):
        engine = model.for_inference() if isinstance(model, CoughSeparator) else model
        if not isinstance(engine, InferenceSeparator):
            raise TypeError(f"expected a CoughSeparator or InferenceSeparator, got {type(model).__name__}")
        self.engine = engine
        self.config = engine.config
        self.device = engine.window.device
        self.latency_samples = self.config.n_fft - 1
        self._threads = 1 if single_threaded and self.device.type == "cpu" else None
        self.reset()

    @property
    def latency_seconds(self) -> float:
        """The output delay in seconds (``latency_samples / sample_rate``)."""
        return self.latency_samples / self.config.sample_rate

    def reset(self) -> None:
        """Forget the stream: empty buffers, zero LSTM state."""
        c = self.config
        hop, blocks = c.hop_length, self.engine.blocks
        zeros = torch.zeros
        self._input = zeros(c.n_fft // 2, device=self.device)  # the centred STFT's left zero padding
        self._state: tuple[torch.Tensor, torch.Tensor] | None = None
        self._ola = zeros(blocks - 1, hop, device=self.device)  # partial sums of the next blocks - 1 hops
        # window-square sums: block j of the output gets sum of squares[r] over the frames j - r that exist
        squares = (self.engine.window**2).reshape(blocks, hop)
        self._square_sums = torch.cat([squares.new_zeros(1, hop), squares.cumsum(0)])  # [k]: rows < k
        self._steady_inverse = self._square_sums[blocks].reciprocal()
        self._skip = c.n_fft // 2  # finished padded samples that precede the signal
        self._received = 0
        self._frames_done = 0
        self._finished = 0  # offline output samples already produced
        self._queue = zeros(self.latency_samples, device=self.device)  # delay line: finished, not yet returned
        self._flushed = False
        self._as_numpy = True

    def _envelope(self, first_block: int, count: int, total_frames: int | None) -> torch.Tensor:
        """Window-square sums ``(count, hop)`` of blocks ``first_block ...`` when frames ``0 .. total_frames - 1``
        exist (None: the stream goes on)."""
        blocks = self.engine.blocks
        rows = []
        for block in range(first_block, first_block + count):
            low = 0 if total_frames is None else max(0, block - total_frames + 1)
            rows.append(self._square_sums[min(block, blocks - 1) + 1] - self._square_sums[low])
        return torch.stack(rows)

    def _frames(self, count: int) -> torch.Tensor:
        """Finished offline output from the next ``count`` frames of the input buffer (consumed by a hop each)."""
        c = self.config
        hop, blocks = c.hop_length, self.engine.blocks
        if count == 0:
            return self._input.new_zeros(0)
        engine = self.engine
        frames = self._input[: (count - 1) * hop + c.n_fft].unfold(0, c.n_fft, hop)  # (count, n_fft)
        spectrum = torch.fft.rfft(frames * engine.window).unsqueeze(0)  # (1, count, bins)
        mask, self._state = engine.frame_masks(spectrum, self._state)
        signal = engine.masked_frames(spectrum, mask)[0].reshape(count, blocks, hop)
        # overlap-add onto the tail; rows [0, count) are then final, the last blocks - 1 rows the new tail
        ola = signal.new_zeros(count + blocks - 1, hop)
        ola[: blocks - 1] = self._ola
        for shift in range(blocks):
            ola[shift : shift + count] += signal[:, shift]
        self._ola = ola[count:]
        self._input = self._input[count * hop :]
        first, self._frames_done = self._frames_done, self._frames_done + count
        finished = ola[:count]
        if first >= blocks - 1:
            finished = finished * self._steady_inverse
        else:
            finished = finished / self._envelope(first, count, None)
        return self._finish(finished.reshape(-1))

    def _finish(self, signal: torch.Tensor) -> torch.Tensor:
        """Drop the leading padding from normalised finished samples; cap at the signal length once flushed."""
        if self._skip:
            dropped = min(self._skip, signal.shape[0])
            signal = signal[dropped:]
            self._skip -= dropped
        if self._flushed:
            signal = signal[: max(0, self._received - self._finished)]
        self._finished += signal.shape[0]
        return signal

    @torch.inference_mode()
    def _push(self, samples: torch.Tensor) -> None:
        c = self.config
        self._input = torch.cat([self._input, samples])
        ready = max(0, (self._input.shape[0] - c.n_fft) // c.hop_length + 1)
        self._queue = torch.cat([self._queue, self._frames(ready)])

    def process(self, chunk) -> np.ndarray | torch.Tensor:
        """Feed ``chunk`` and get as many output samples, delayed by :attr:`latency_samples`.

        Args:
            chunk: mono samples, a numpy array or a 1-D tensor (any length, also 0).

        Returns:
            The output samples: numpy float32 for numpy input, else a tensor.

        Shape:
            ``chunk`` ``(samples,)``; returns ``(samples,)``.
        """
        return self._run(self._process, chunk)

    def flush(self) -> np.ndarray | torch.Tensor:
        """End the stream: zero-pad the input as the offline STFT does and return the rest of the output.

        Returns:
            The remaining output samples (numpy unless the chunks were tensors).

        Shape:
            Returns ``(latency_samples,)``.
        """
        return self._run(self._flush)

    def _run(self, function, *args):
        if self._threads is None:
            return function(*args)
        with intra_op_threads(self._threads):
            return function(*args)

    def _process(self, chunk) -> np.ndarray | torch.Tensor:
        if self._flushed:
            raise RuntimeError("stream already flushed; call reset() to start a new one")
        samples, as_numpy = self._as_tensor(chunk)
        self._as_numpy = as_numpy
        self._received += samples.shape[0]
        self._push(samples)
        return self._pop(samples.shape[0], as_numpy)

    def _flush(self) -> np.ndarray | torch.Tensor:
        if self._flushed:
            raise RuntimeError("stream already flushed; call reset() to start a new one")
        c = self.config
        self._flushed = True
        with torch.inference_mode():
            # the offline STFT has 1 + received // hop frames; the last one reaches n_fft // 2 past its start
            frames_total = 1 + self._received // c.hop_length
            remaining = max(0, frames_total - self._frames_done)
            needed = max(0, (remaining - 1) * c.hop_length + c.n_fft)
            self._input = torch.cat([self._input, self._input.new_zeros(max(0, needed - self._input.shape[0]))])
            parts = [self._queue, self._frames(remaining)]
            envelope = self._envelope(self._frames_done, self.engine.blocks - 1, frames_total)
            parts.append(self._finish((self._ola / envelope).reshape(-1)))
            self._queue = torch.cat(parts)
        return self._pop(self._queue.shape[0], self._as_numpy)

    def _as_tensor(self, chunk) -> tuple[torch.Tensor, bool]:
        as_numpy = not isinstance(chunk, torch.Tensor)
        samples = torch.as_tensor(np.asarray(chunk, dtype=np.float32) if as_numpy else chunk)
        if samples.dim() != 1:
            raise ValueError(f"expected mono samples (samples,), got shape {tuple(samples.shape)}")
        return samples.to(self.device, torch.float32), as_numpy

    def _pop(self, count: int, as_numpy: bool) -> np.ndarray | torch.Tensor:
        out, self._queue = self._queue[:count], self._queue[count:]
        if out.shape[0] != count:
            raise AssertionError("streaming delay line underflow")  # cannot happen with latency n_fft - 1
        return out.cpu().numpy() if as_numpy else out.clone()


def stream(
    model: CoughSeparator | InferenceSeparator, samples, chunk_size: int, single_threaded: bool = True
) -> np.ndarray:
    """Run ``samples`` through a fresh :class:`StreamingSeparator` in ``chunk_size`` pieces.

    Args:
        model: the separator.
        samples: the mono input.
        chunk_size: samples per :meth:`StreamingSeparator.process` call.
        single_threaded: as for :class:`StreamingSeparator`.

    Returns:
        The offline output (the first ``latency_samples`` of the delayed stream dropped), float32.

    Shape:
        ``samples`` ``(samples,)``; returns ``(samples,)``.
    """
    streamer = StreamingSeparator(model, single_threaded=single_threaded)
    samples = np.asarray(samples, dtype=np.float32)
    pieces = [streamer.process(samples[start : start + chunk_size]) for start in range(0, len(samples), chunk_size)]
    pieces.append(streamer.flush())
    return np.concatenate(pieces)[streamer.latency_samples :]
