"""The published cough separator: STFT encoder, LSTM mask estimator, iSTFT decoder (about 96 k parameters).

The pipeline, for a mono mixture ``wave`` of shape ``(batch, samples)`` at 44.1 kHz::

    StftEncoder    wave -> |STFT| (batch, frames, 257) and the mixture phase      (Hann 512, hop 128, zero-padded)
    MaskEstimator  |STFT| -> dB -> BatchNorm -> LSTM(257->50) -> LSTM(50->50) -> Linear(50->257) -> sigmoid mask
    IstftDecoder   (mask x |STFT|, mixture phase) -> wave (batch, samples)

``frames = 1 + samples // 128`` (1723 for a 5-second clip). The STFT is centred with *zero* padding (not the usual
reflection) so that :mod:`.streaming` can reproduce it chunk by chunk without look-ahead. The LSTM is
unidirectional, so a frame's mask depends only on that frame and earlier ones.

:class:`CoughSeparator` is the trainable reference; :meth:`CoughSeparator.for_inference` gives an
:class:`InferenceSeparator` with the same outputs (within 1e-5) that is 2-3x faster on CPU: BatchNorm and the
decibel scaling are folded into the first LSTM layer's input weights, the magnitude is never square-rooted, the
mask multiplies the complex spectrum directly and the LSTM recurrence runs in a numba kernel (:mod:`.cpu_kernels`).
The measured latency and throughput of each step are in ``benchmarks/results/separation.json`` and the README;
:func:`~cough_pipeline.allocator.retain_freed_memory` is the allocator setting both paths need to reach them.
Weights are stored as a plain ``state_dict`` (``separator.pt``, loaded with ``weights_only=True``) next to a JSON card
(``separator.json``).
"""

from __future__ import annotations

import copy
import json
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cough_pipeline.bounds import PositiveFloat, PositiveInt, check_fields
from cough_pipeline.separation.cpu_kernels import log_power, scaled_layer

#: File names inside a folder written by :meth:`CoughSeparator.save`.
WEIGHTS_FILE = "separator.pt"
CARD_FILE = "separator.json"
CARD_FORMAT = "cough_pipeline.separation/1"


@dataclass(frozen=True)
class SeparatorConfig:
    """Shape of the separator; the defaults are the published model.

    Args:
        sample_rate: the rate of the waves the model sees, in Hz.
        n_fft: STFT frame length; even, a multiple of ``hop_length`` and at least twice it (75 % overlap by
            default).
        hop_length: STFT hop in samples.
        hidden_size: units per LSTM layer.
        num_layers: stacked LSTM layers.
        db_floor: the smallest magnitude converted to decibels (``20 * log10(max(|X|, db_floor))``, so -160 dB).
        clip_seconds: the length the training data set pads or trims every mixture to; the model itself takes
            any length.
    """

    sample_rate: PositiveInt = 44_100
    n_fft: PositiveInt = 512
    hop_length: PositiveInt = 128
    hidden_size: PositiveInt = 50
    num_layers: PositiveInt = 2
    db_floor: PositiveFloat = 1e-8
    clip_seconds: PositiveFloat = 5.0

    def __post_init__(self):
        check_fields(self)
        if self.n_fft % self.hop_length or self.n_fft < 2 * self.hop_length:
            raise ValueError(
                f"n_fft ({self.n_fft}) must be a multiple of hop_length ({self.hop_length}) and at least twice it"
            )
        if self.n_fft % 2:
            raise ValueError(f"n_fft must be even, got {self.n_fft}")

    @property
    def n_bins(self) -> int:
        """Frequency bins of the one-sided spectrum: ``n_fft // 2 + 1`` (257)."""
        return self.n_fft // 2 + 1

    @property
    def clip_samples(self) -> int:
        """Samples in one training clip: 220 500 for 5 s at 44.1 kHz."""
        return round(self.clip_seconds * self.sample_rate)

    def n_frames(self, samples: int) -> int:
        """STFT frames of a ``samples``-long signal: ``1 + samples // hop_length``."""
        return 1 + samples // self.hop_length

    def to_dict(self) -> dict:
        """The fields as a JSON-ready dict (what a model card stores)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> SeparatorConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a card from a different model)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown separator config keys {unknown}")
        return cls(**values)


def default_device() -> torch.device:
    """``cuda`` when available, else ``cpu``."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``device`` as a :class:`torch.device`.

    Args:
        device: a name such as ``"cpu"`` or ``"cuda:0"``, a device, or ``None`` for :func:`default_device`.

    Returns:
        The device.
    """
    return default_device() if device is None else torch.device(device)


def _as_batch(wave: torch.Tensor) -> torch.Tensor:
    if wave.dim() != 2:
        raise ValueError(f"expected a (batch, samples) wave, got shape {tuple(wave.shape)}")
    return wave


class StftEncoder(nn.Module):
    """Waveform to magnitude and phase spectrogram, frames first.

    Centred STFT with a periodic Hann window, zero padding of ``n_fft // 2`` on both sides.

    Args:
        config: frame length and hop.

    Shape:
        ``(batch, samples)`` in, ``(batch, frames, n_bins)`` out with ``frames = 1 + samples // hop_length``.
    """

    def __init__(self, config: SeparatorConfig = SeparatorConfig()):
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)

    def spectrum(self, wave: torch.Tensor) -> torch.Tensor:
        """The complex STFT of ``wave``.

        Shape:
            ``wave`` ``(batch, samples)``; returns complex ``(batch, frames, n_bins)``.
        """
        c = self.config
        spec = torch.stft(
            _as_batch(wave),
            c.n_fft,
            c.hop_length,
            window=self.window,
            center=True,
            pad_mode="constant",
            return_complex=True,
        )  # (batch, n_bins, frames)
        return spec.transpose(1, 2)

    def magnitude(self, wave: torch.Tensor) -> torch.Tensor:
        """``|STFT|`` without computing the phase (what training needs).

        Shape:
            ``wave`` ``(batch, samples)``; returns ``(batch, frames, n_bins)``.
        """
        return complex_magnitude(self.spectrum(wave))

    def forward(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Magnitude and phase of ``wave``'s STFT.

        Returns:
            ``(magnitude, phase)``, the phase in radians.

        Shape:
            ``wave`` ``(batch, samples)``; each output real ``(batch, frames, n_bins)``.
        """
        spec = self.spectrum(wave)
        return complex_magnitude(spec), spec.angle()


def complex_magnitude(spectrum: torch.Tensor) -> torch.Tensor:
    """``|spectrum|`` as ``sqrt(re^2 + im^2)`` on the real view: equal to ``abs()`` within 1.2e-7 relative and faster
    on CPU, where complex ``abs`` is not vectorised (audio never comes near float overflow).

    Shape:
        Any complex shape in; the same real shape out.
    """
    pairs = torch.view_as_real(spectrum)
    return pairs[..., 0].square().addcmul_(pairs[..., 1], pairs[..., 1]).sqrt_()


class MaskEstimator(nn.Module):
    """Magnitude spectrogram to a [0, 1] mask of the same shape.

    dB -> ``norm`` (BatchNorm over the bins) -> ``lstm`` (unidirectional, batch first) -> ``output`` (Linear) ->
    sigmoid. ``lstm`` and ``output`` are attributes so that pruning can address them by parameter name
    (``masker.lstm.weight_ih_l0``, ``masker.output.weight``, ...).

    Args:
        config: bins, hidden size, layers and the dB floor.
    """

    def __init__(self, config: SeparatorConfig = SeparatorConfig()):
        super().__init__()
        self.config = config
        self.norm = nn.BatchNorm1d(config.n_bins)
        self.lstm = nn.LSTM(config.n_bins, config.hidden_size, num_layers=config.num_layers, batch_first=True)
        self.output = nn.Linear(config.hidden_size, config.n_bins)

    def decibels(self, magnitude: torch.Tensor) -> torch.Tensor:
        """``20 * log10(max(magnitude, db_floor))``.

        Shape:
            Any shape in; the same shape out.
        """
        return 20.0 * torch.log10(magnitude.clamp_min(self.config.db_floor))

    def forward(
        self, magnitude: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The mask of ``magnitude``; in training mode BatchNorm uses the batch statistics over all frames.

        Args:
            magnitude: the mixture's ``|STFT|``.
            state: the LSTM ``(h, c)`` from a previous call on the preceding frames (``None``: zeros).

        Returns:
            ``(mask, (h, c))``: the mask in [0, 1] and the LSTM state after the last frame.

        Shape:
            ``magnitude`` and ``mask`` ``(batch, frames, n_bins)``; ``h`` and ``c`` each
            ``(num_layers, batch, hidden_size)``.
        """
        features = self.decibels(magnitude)
        batch, frames, bins = features.shape
        features = self.norm(features.reshape(batch * frames, bins)).reshape(batch, frames, bins)
        hidden, state = self.lstm(features, state)
        return torch.sigmoid(self.output(hidden)), state


class IstftDecoder(nn.Module):
    """Magnitude plus phase back to a waveform (inverse of :class:`StftEncoder`, same window and padding).

    Args:
        config: frame length and hop.
    """

    def __init__(self, config: SeparatorConfig = SeparatorConfig()):
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hann_window(config.n_fft), persistent=False)

    def forward(self, magnitude: torch.Tensor, phase: torch.Tensor, length: int) -> torch.Tensor:
        """The wave whose STFT is ``magnitude * exp(i * phase)``.

        Args:
            magnitude: the magnitude spectrogram.
            phase: the phase in radians.
            length: samples of the output.

        Shape:
            ``magnitude``, ``phase`` ``(batch, frames, n_bins)``; returns ``(batch, length)``.
        """
        c = self.config
        spec = torch.polar(magnitude, phase).transpose(1, 2)  # (batch, n_bins, frames)
        return torch.istft(spec, c.n_fft, c.hop_length, window=self.window, center=True, length=length)


class CoughSeparator(nn.Module):
    """Mixture wave to estimated cough wave: ``decoder(masker(encoder(wave)) * |X|, phase(X))``.

    Only ``masker`` holds parameters (95 821 with the default config). ``metadata`` is the dict stored with the
    weights by :meth:`save` (empty for a fresh model; training records its best epoch there).

    Args:
        config: the model's shape (default: the published one).

    Shape:
        ``(batch, samples)`` or ``(samples,)`` in; the estimated cough of the same shape out.
    """

    def __init__(self, config: SeparatorConfig = SeparatorConfig()):
        super().__init__()
        self.config = config
        self.encoder = StftEncoder(config)
        self.masker = MaskEstimator(config)
        self.decoder = IstftDecoder(config)
        self.metadata: dict = {}

    def separate_magnitude(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The estimated cough magnitude and the mixture magnitude; the L1 training loss compares the first with
        ``|STFT(cough)|``.

        Returns:
            ``(mask x |mixture|, |mixture|)``.

        Shape:
            ``wave`` ``(batch, samples)``; each output ``(batch, frames, n_bins)``.
        """
        magnitude = self.encoder.magnitude(wave)
        mask, _ = self.masker(magnitude)
        return mask * magnitude, magnitude

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """The estimated cough of ``wave``.

        Shape:
            ``wave`` ``(batch, samples)`` or ``(samples,)``; returns the same shape.
        """
        if wave.dim() == 1:
            return self.forward(wave.unsqueeze(0)).squeeze(0)
        magnitude, phase = self.encoder(wave)
        mask, _ = self.masker(magnitude)
        return self.decoder(mask * magnitude, phase, wave.shape[-1])

    def parameter_count(self) -> int:
        """Trainable parameters (BatchNorm running statistics are buffers and not counted)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def for_inference(self, cpu_kernels: bool = True) -> InferenceSeparator:
        """A folded, eval-only copy for fast inference (see :class:`InferenceSeparator`).

        Args:
            cpu_kernels: use the numba kernels on CPU (float32).

        Returns:
            The :class:`InferenceSeparator`; later changes to this model do not affect it.
        """
        return InferenceSeparator(self, cpu_kernels=cpu_kernels)

    def save(self, folder: str | Path, metadata: dict | None = None) -> Path:
        """Write ``separator.pt`` (the ``state_dict`` only) and ``separator.json`` (config, parameter count and
        metadata) into ``folder``.

        Args:
            folder: created if needed.
            metadata: JSON-serialisable; ``None`` stores :attr:`metadata`.

        Returns:
            The folder.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        metadata = dict(self.metadata if metadata is None else metadata)
        state = {name: tensor.detach().cpu() for name, tensor in self.state_dict().items()}
        torch.save(state, folder / WEIGHTS_FILE)
        card = {
            "format": CARD_FORMAT,
            "config": self.config.to_dict(),
            "parameters": self.parameter_count(),
            "metadata": metadata,
        }
        (folder / CARD_FILE).write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path, map_location: str | torch.device | None = "cpu") -> CoughSeparator:
        """A model written by :meth:`save`. The weights are read with ``torch.load(weights_only=True)``, so a file
        holding anything but tensors is refused.

        Args:
            folder: what :meth:`save` wrote.
            map_location: the device to load onto (``None``: where the tensors were saved from).

        Returns:
            The model in eval mode, with ``metadata`` restored.
        """
        folder = Path(folder)
        card = read_card(folder)
        model = cls(SeparatorConfig.from_dict(card["config"]))
        state = torch.load(folder / WEIGHTS_FILE, map_location=map_location, weights_only=True)
        model.load_state_dict(state)
        model.metadata = dict(card.get("metadata") or {})
        if map_location is not None:
            model.to(map_location)
        return model.eval()


def read_card(folder: str | Path) -> dict:
    """The ``separator.json`` card of a saved model.

    Args:
        folder: what :meth:`CoughSeparator.save` wrote.

    Returns:
        ``{"format", "config", "parameters", "metadata"}``.
    """
    path = Path(folder) / CARD_FILE
    card = json.loads(path.read_text())
    if card.get("format") != CARD_FORMAT:
        raise ValueError(f"{path}: not a cough separator card (format {card.get('format')!r})")
    return card


def expected_parameter_count(config: SeparatorConfig = SeparatorConfig()) -> int:
    """Parameters from the architecture alone: per LSTM layer ``4 * hidden * (input + hidden) + 8 * hidden``
    (PyTorch keeps two bias vectors), the Linear ``hidden * bins + bins``, BatchNorm ``2 * bins``.

    Args:
        config: the model's shape.

    Returns:
        The count (95 821 for the published model).
    """
    h, f = config.hidden_size, config.n_bins
    lstm = sum(4 * h * ((f if layer == 0 else h) + h) + 8 * h for layer in range(config.num_layers))
    return lstm + (h * f + f) + 2 * f


class InferenceSeparator(nn.Module):
    """Eval-only separator with the same outputs as :class:`CoughSeparator` in eval mode (within 1e-5).

    What differs from the reference forward (each is exact algebra; only rounding changes):

    * the STFT is framed with ``unfold`` and ``rfft`` directly in ``(batch, frames, bins)`` layout (no transposes);
    * the LSTM input is ``log(max(|X|^2, db_floor^2))`` - no square root, no complex ``abs``; the dB factor and
      the eval BatchNorm are one per-bin affine map, folded into the first layer's ``weight_ih`` / ``bias_ih``;
    * the mask multiplies the complex spectrum in place: no ``angle``/``polar``;
    * the overlap-add is ``n_fft / hop`` shifted block sums and the window-envelope normalisation is cached;
    * on CPU (float32, ``cpu_kernels=True``, the default) the numba kernels of :mod:`.cpu_kernels` compute the
      log power in one pass and each LSTM layer's recurrence after one input-projection product: torch's fused
      LSTM spends most of its time on per-step set-up, 1 723 steps per layer for a 5-second clip.
      ``cpu_kernels=False`` keeps torch's ops and ``nn.LSTM`` (always used on CUDA).

    On CPU, :meth:`separate` runs batches on single-threaded worker threads (one per core) instead of one batch
    with OpenMP-parallel ops: most ops here are too small to split well, and an OpenMP barrier stalls whenever
    another process holds a core. A single clip in :meth:`forward` uses the caller's intra-op threads for the
    FFTs and matrix products; the recurrence runs on one.

    Build it with :meth:`CoughSeparator.for_inference`; changing the source model later does not affect it.

    Args:
        model: the separator to fold (its eval-mode BatchNorm statistics are used).
        cpu_kernels: use the numba kernels on CPU (float32).

    Shape:
        ``(batch, samples)`` or ``(samples,)`` in; the estimated cough of the same shape out.
    """

    def __init__(self, model: CoughSeparator, cpu_kernels: bool = True):
        super().__init__()
        config = model.config
        self.config = config
        self.blocks = config.n_fft // config.hop_length
        self.power_floor = float(config.db_floor) ** 2
        masker = model.masker
        source = masker.lstm
        self.layers = nn.ModuleList()
        for index in range(config.num_layers):
            layer = nn.LSTM(
                source.input_size if index == 0 else config.hidden_size, config.hidden_size, batch_first=True
            ).to(source.weight_ih_l0.device)
            with torch.no_grad():
                for kind in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(layer, f"{kind}_l0").copy_(getattr(source, f"{kind}_l{index}"))
            self.layers.append(layer)
        self.output = copy.deepcopy(masker.output)
        with torch.no_grad():
            norm = masker.norm
            scale = norm.weight / torch.sqrt(norm.running_var + norm.eps)  # (bins,)
            shift = norm.bias - norm.running_mean * scale
            # BatchNorm(20 log10 |X|) = scale * (10 / ln 10) * ln |X|^2 + shift, folded into the input weights
            first = self.layers[0]
            first.bias_ih_l0.add_(first.weight_ih_l0 @ shift)
            first.weight_ih_l0.mul_((scale * (10.0 / math.log(10.0))).unsqueeze(0))
        for layer in self.layers:
            layer.flatten_parameters()
        for parameter in self.parameters():
            parameter.requires_grad_(False)
        # the same folded weights for the CPU recurrence kernel (derived, so not in the state_dict)
        self.cpu_kernels = cpu_kernels
        self.kernel_layers = [scaled_layer(layer) for layer in self.layers]
        reference = masker.norm.weight
        window = torch.hann_window(config.n_fft, dtype=reference.dtype, device=reference.device)
        self.register_buffer("window", window, persistent=False)
        self._envelopes: dict[tuple[int, int, str], torch.Tensor] = {}
        self.eval()

    def train(self, mode: bool = True) -> InferenceSeparator:
        if mode:
            raise RuntimeError("InferenceSeparator is eval-only; train the CoughSeparator it came from")
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.window.device

    # -- the steps ------------------------------------------------------------------------------------------------

    def frames(self, wave: torch.Tensor) -> torch.Tensor:
        """Zero-padded overlapping frames of ``wave`` (a view, no copy).

        Shape:
            ``wave`` ``(batch, samples)``; returns ``(batch, frames, n_fft)``.
        """
        c = self.config
        half = c.n_fft // 2
        return F.pad(_as_batch(wave), (half, half)).unfold(-1, c.n_fft, c.hop_length)

    def spectrum(self, wave: torch.Tensor) -> torch.Tensor:
        """The complex STFT of ``wave``, the same as the encoder's.

        Shape:
            ``wave`` ``(batch, samples)``; returns complex ``(batch, frames, n_bins)``.
        """
        return torch.fft.rfft(self.frames(wave) * self.window)

    def features(self, spectrum: torch.Tensor) -> torch.Tensor:
        """``log(max(|spectrum|^2, db_floor^2))``: the folded first layer's input.

        Shape:
            ``spectrum`` complex ``(batch, frames, n_bins)``; returns real ``(batch, frames, n_bins)``.
        """
        if self.uses_cpu_kernels:
            return log_power(spectrum, self.power_floor)
        pairs = torch.view_as_real(spectrum)
        power = pairs[..., 0].square()
        power.addcmul_(pairs[..., 1], pairs[..., 1])
        return power.clamp_min_(self.power_floor).log_()

    def frame_masks(
        self, spectrum: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The mask of ``spectrum``, equal to :class:`MaskEstimator` in eval mode on ``|spectrum|``.

        Args:
            spectrum: the mixture's complex STFT.
            state: the LSTM ``(h, c)`` carried from the previous call (``None``: zeros).

        Returns:
            ``(mask, (h, c))``.

        Shape:
            ``spectrum`` and ``mask`` ``(batch, frames, n_bins)``; ``h``, ``c`` each ``(num_layers, batch, hidden)``.
        """
        hidden, state = self.recurrent(self.features(spectrum), state)
        return self.output(hidden).sigmoid_(), state

    @property
    def uses_cpu_kernels(self) -> bool:
        """Whether the features and the LSTM layers run through the numba kernels of :mod:`.cpu_kernels` (CPU,
        float32, ``cpu_kernels``) rather than torch's ops and ``nn.LSTM`` (CUDA, or ``cpu_kernels=False``)."""
        return self.cpu_kernels and self.device.type == "cpu" and self.window.dtype == torch.float32

    def recurrent(
        self, features: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """The LSTM layers over ``features``.

        Args:
            features: :meth:`features` of the spectrum.
            state: as in :meth:`frame_masks`.

        Returns:
            ``(hidden, (h, c))``: the last layer's output and the state after the last frame.

        Shape:
            ``features`` ``(batch, frames, n_bins)``; ``hidden`` ``(batch, frames, hidden)``.
        """
        new_h, new_c = [], []
        for index in range(len(self.layers)):
            layer_state = None if state is None else (state[0][index], state[1][index])
            if self.uses_cpu_kernels:
                features, (h, c) = self.kernel_layers[index](features, layer_state)
            else:
                layer_state = None if layer_state is None else tuple(part.unsqueeze(0) for part in layer_state)
                features, (h, c) = self.layers[index](features, layer_state)
                h, c = h[0], c[0]
            new_h.append(h)
            new_c.append(c)
        return features, (torch.stack(new_h), torch.stack(new_c))

    def masked_frames(self, spectrum: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Windowed time frames of ``mask x spectrum`` (consumes ``spectrum``).

        Shape:
            ``spectrum``, ``mask`` ``(batch, frames, n_bins)``; returns ``(batch, frames, n_fft)``.
        """
        # complex *= real is vectorised; the real-pair view with a broadcast last dim of 2 is 3x slower
        return torch.fft.irfft(spectrum.mul_(mask), n=self.config.n_fft).mul_(self.window)

    def overlap_add(self, frames: torch.Tensor) -> torch.Tensor:
        """Overlap-add of windowed time frames, in padded coordinates (not normalised).

        Shape:
            ``frames`` ``(batch, frames, n_fft)``; returns ``(batch, (frames + blocks - 1) * hop)``.
        """
        batch, count, _ = frames.shape
        hop = self.config.hop_length
        blocks = frames.reshape(batch, count, self.blocks, hop)
        out = blocks.new_zeros(batch, count + self.blocks - 1, hop)
        for shift in range(self.blocks):
            out[:, shift : shift + count] += blocks[:, :, shift]
        return out.reshape(batch, -1)

    def inverse_envelope(self, frames: int, length: int) -> torch.Tensor:
        """``1 / sum_t window^2`` over the output samples ``[n_fft // 2, n_fft // 2 + length)``, cached.

        Shape:
            Returns ``(length,)``.
        """
        key = (frames, length, str(self.window.device))
        envelope = self._envelopes.get(key)
        if envelope is None:
            squares = (self.window**2).expand(1, frames, -1)
            half = self.config.n_fft // 2
            total = self.overlap_add(squares)[0, half : half + length]
            if bool((total < 1e-11).any()):
                raise ValueError("window overlap-add has zeros; the STFT settings are not invertible")
            envelope = total.reciprocal()
            if len(self._envelopes) > 16:
                self._envelopes.clear()
            self._envelopes[key] = envelope
        return envelope

    def synthesise(self, frames: torch.Tensor, length: int) -> torch.Tensor:
        """The wave of windowed time frames (the decoder's iSTFT).

        Shape:
            ``frames`` ``(batch, frames, n_fft)``; returns ``(batch, length)``.
        """
        half = self.config.n_fft // 2
        wave = self.overlap_add(frames)[:, half : half + length]
        return wave.mul_(self.inverse_envelope(frames.shape[1], length))

    # -- whole clips ----------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """The estimated cough of ``wave``, computed in the calling thread with the process's intra-op threads.

        On CPU the FFT stages run clip by clip (each clip's 3.5 MB spectrum stays in cache, which is faster than
        one batched FFT) while the LSTM and the output layer see the whole batch.

        Shape:
            ``wave`` ``(batch, samples)`` or ``(samples,)``; returns the same shape.
        """
        if wave.dim() == 1:
            return self.forward(wave.unsqueeze(0)).squeeze(0)
        wave = _as_batch(wave).to(self.device, self.window.dtype)
        spectrum, features = self._analyse(wave)
        hidden, _ = self.recurrent(features)
        return self._resynthesise(spectrum, self.output(hidden).sigmoid_(), wave.shape[-1])

    def _analyse(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(spectrum, features)`` of ``wave`` ``(batch, samples)``, both ``(batch, frames, n_bins)``."""
        if self.device.type != "cpu" or wave.shape[0] == 1:
            spectrum = self.spectrum(wave)
            return spectrum, self.features(spectrum)
        frames = self.frames(wave)
        batch, count, _ = frames.shape
        spectrum = torch.empty(batch, count, self.config.n_bins, dtype=torch.complex64, device=self.device)
        features = torch.empty(batch, count, self.config.n_bins, device=self.device)
        for index in range(batch):
            torch.fft.rfft(frames[index] * self.window, out=spectrum[index])
            features[index] = self.features(spectrum[index])
        return spectrum, features

    def _resynthesise(self, spectrum: torch.Tensor, mask: torch.Tensor, length: int) -> torch.Tensor:
        """Wave ``(batch, length)`` of ``mask x spectrum`` (consumes ``spectrum``)."""
        if self.device.type != "cpu" or spectrum.shape[0] == 1:
            return self.synthesise(self.masked_frames(spectrum, mask), length)
        out = spectrum.new_empty(spectrum.shape[0], length, dtype=mask.dtype)
        for index in range(spectrum.shape[0]):
            out[index] = self.synthesise(
                self.masked_frames(spectrum[index : index + 1], mask[index : index + 1]), length
            )[0]
        return out

    @torch.inference_mode()
    def separate(self, waves: torch.Tensor, batch_size: int | None = None, workers: int | None = None) -> torch.Tensor:
        """:meth:`forward` on ``waves`` in slices of ``batch_size`` clips.

        Args:
            waves: the mixtures.
            batch_size: clips per slice; by default one on CPU, where a clip's intermediates then stay in cache and
                batching buys the recurrence kernel nothing (``benchmarks/results/separation.json`` compares batch
                sizes), and 32 on CUDA.
            workers: on CPU the slices go to this many single-threaded threads (default: the process's intra-op
                thread count; 0 or 1 runs them in the calling thread).

        Returns:
            The estimated coughs, on the model's device.

        Shape:
            ``waves`` ``(clips, samples)``; returns ``(clips, samples)``.
        """
        if batch_size is None:
            batch_size = 1 if self.device.type == "cpu" else 32
        workers = self._workers(workers)
        slices = [waves[start : start + batch_size] for start in range(0, waves.shape[0], batch_size)]
        if not slices:
            return waves.new_zeros(waves.shape).to(self.device)
        if workers <= 1:
            return torch.cat([self.forward(part) for part in slices])
        pool = single_threaded_pool(workers)
        return torch.cat(
            [future.result() for future in [pool.submit(self._forward_in_worker, part) for part in slices]]
        )

    def _forward_in_worker(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.forward(wave)

    def _workers(self, workers: int | None) -> int:
        if self.device.type != "cpu":
            return 0
        return torch.get_num_threads() if workers is None else workers


@contextmanager
def intra_op_threads(count: int):
    """Run the block with ``count`` torch intra-op threads in the calling thread, then restore its previous count.

    OpenMP and MKL thread counts are per thread, so other threads that already ran torch ops keep theirs; only a
    thread starting its first torch op meanwhile would inherit ``count``.

    Args:
        count: intra-op threads inside the block.
    """
    previous = torch.get_num_threads()
    if previous == count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


_POOLS: dict[tuple[int, str], ThreadPoolExecutor] = {}
_POOLS_LOCK = threading.Lock()


def single_threaded_pool(workers: int, name: str = "batch") -> ThreadPoolExecutor:
    """A process-wide pool of ``workers`` threads whose torch ops each run on one intra-op thread.

    ``torch.set_num_threads`` sets the calling thread's OpenMP/MKL thread count and the default for threads not yet
    initialised; each worker sets 1 for itself, and the caller's default is restored afterwards.

    Args:
        workers: threads in the pool.
        name: pools are shared per ``(workers, name)``.

    Returns:
        The pool (created on first use, then reused).
    """
    key = (workers, name)
    with _POOLS_LOCK:
        pool = _POOLS.get(key)
        if pool is None:
            previous = torch.get_num_threads()
            ready = threading.Barrier(workers + 1)

            def initialise():
                torch.get_num_threads()  # run torch's lazy per-thread initialisation first ...
                torch.set_num_threads(1)  # ... then pin this thread to one intra-op thread
                ready.wait()

            pool = ThreadPoolExecutor(workers, thread_name_prefix=f"separator-{name}", initializer=initialise)
            for _ in range(workers):
                pool.submit(int)
            ready.wait()
            torch.set_num_threads(previous)
            _POOLS[key] = pool
    return pool
