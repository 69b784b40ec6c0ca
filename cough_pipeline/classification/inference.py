"""Fast prediction with trained neural classifiers: log-mel (or any model input) in, P(positive) out.

:meth:`InferenceModel.from_classifier` (one model) and :meth:`InferenceModel.from_classifiers` (a fold ensemble,
the mean of its models' probabilities) turn eval-mode :class:`~cough_pipeline.classification.networks.NeuralClassifier`
weights into a frozen predictor, ``predictor(batch) -> (batch,)``. It is faster than calling the models in eager
PyTorch because the per-operator overhead of eager mode (a Python dispatch and an OpenMP parallel region for every
convolution, batch norm and activation of the MobileNets' ~150 small layers) dominates single-clip latency on a
CPU, and much of it is avoidable:

* ``"onnxruntime"`` (CPU, when the ``onnx`` and ``onnxruntime`` packages are installed): the models are exported
  once (``torch.onnx``, batch axis dynamic) to an ONNX graph ending in the softmax/sigmoid and the ensemble mean,
  which ONNX Runtime optimises (batch norms folded into the convolution weights, activations fused into the
  convolutions) and runs in one call on its own pool of ``torch.get_num_threads()`` threads, which sleep rather
  than spin when idle (other processes share the cores).
* ``"torch"`` (CUDA, or the CPU when ONNX Runtime is absent or fails): a copy of each network with every batch norm
  that directly follows a convolution folded into that convolution's weights and bias (one pass over each feature
  map fewer), in ``channels_last`` memory format, run under :func:`torch.inference_mode`.

An :class:`InferenceModel` copies the weights when it is made, so it predicts with those (in eval mode) whatever
later happens to the models. Each backend checks itself on the first batch of a shape against the eager models
(probabilities within :data:`TOLERANCE`); ``"auto"`` falls back to the next backend, and finally to eager
PyTorch, when one cannot be built or does not match.
"""

from __future__ import annotations

import copy
import io
import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from cough_pipeline.classification.errors import ClassificationError
from cough_pipeline.classification.networks import NeuralClassifier, as_model_input, probabilities

Backend = Literal["auto", "onnxruntime", "torch", "eager"]
#: Largest |fast - eager| probability a built predictor may show on its example batch.
TOLERANCE = 1e-4
#: ONNX opset of the exported graphs (every operator the classifiers use, supported by ONNX Runtime >= 1.14).
OPSET = 17

Batch = Mapping[str, "np.ndarray | torch.Tensor"]


class _Probability(nn.Module):
    """The mean P(positive) of ``networks`` on positional inputs (in the models' ``inputs`` order), the graph that
    is exported or run. Shape: inputs ``(batch, ...)`` -> ``(batch,)``."""

    def __init__(self, networks: Sequence[nn.Module], output: str):
        super().__init__()
        self.networks = nn.ModuleList(networks)
        self.output = output

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        parts = [probabilities(network(*inputs), self.output) for network in self.networks]
        return parts[0] if len(parts) == 1 else torch.stack(parts).mean(dim=0)


def fold_batch_norms(module: nn.Module) -> nn.Module:
    """Fold every eval-mode ``BatchNorm2d`` that directly follows a ``Conv2d`` among the children of one module (as
    in timm's MobileNet/EfficientNet blocks: ``conv_pw, bn1, conv_dw, bn2, ...``) into the convolution, in place.

    The convolution becomes ``conv(x) * scale + shift`` with ``scale = gamma / sqrt(var + eps)`` and ``shift =
    beta - mean * scale``, so the batch norm's own pass over the feature map disappears; a timm ``BatchNormAct2d``
    keeps its dropout and activation. Children are assumed to run in registration order, which
    :class:`InferenceModel` verifies by comparing with the unfolded model.

    Returns:
        ``module``.
    """
    for parent in list(module.modules()):
        names = list(parent._modules)
        for first, second in zip(names, names[1:]):
            conv, norm = parent._modules[first], parent._modules[second]
            if _foldable(conv, norm):
                _fold_into(conv, norm)
                parent._modules[second] = _after_norm(norm)
    return module


def _after_norm(norm: nn.BatchNorm2d) -> nn.Module:
    """What runs after the normalisation itself: a timm ``BatchNormAct2d``'s dropout and activation, else nothing."""
    tail = [getattr(norm, part) for part in ("drop", "act") if isinstance(getattr(norm, part, None), nn.Module)]
    return nn.Sequential(*tail) if tail else nn.Identity()


def _foldable(conv: nn.Module | None, norm: nn.Module | None) -> bool:
    return (
        isinstance(conv, nn.Conv2d)
        and isinstance(norm, nn.BatchNorm2d)
        and not norm.training
        and norm.running_mean is not None
        and norm.num_features == conv.out_channels
    )


@torch.no_grad()
def _fold_into(conv: nn.Conv2d, norm: nn.BatchNorm2d) -> None:
    scale = torch.rsqrt(norm.running_var + norm.eps)
    shift = -norm.running_mean * scale
    if norm.affine:
        scale, shift = scale * norm.weight, shift * norm.weight + norm.bias
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    bias = conv.bias if conv.bias is not None else torch.zeros_like(shift)
    conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)


def _as_tensors(batch: Batch, kinds: Sequence[str]) -> list[torch.Tensor]:
    """The inputs in ``kinds`` order as contiguous float32 tensors, images with their channel axis."""
    missing = [kind for kind in kinds if kind not in batch]
    if missing:
        raise ClassificationError(f"the models read {list(kinds)}; the batch lacks {missing}")
    tensors = []
    for kind in kinds:
        value = batch[kind]
        tensor = value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value, dtype=np.float32))
        tensors.append(as_model_input(kind, tensor.to(torch.float32)).contiguous())
    return tensors


class InferenceModel:
    """A frozen predictor of P(positive) for one classifier or the mean of several (a fold ensemble), of the
    weights the classifiers hold when it is made (eval mode, whatever their mode).

    Build it with :meth:`from_classifier` or :meth:`from_classifiers`; call it with a batch ``{kind: array}``.
    A batch whose per-example shapes differ from the example's gets its own predictor, built on first use.

    Shape:
        ``batch[kind]``: ``(batch, rows, columns)`` or ``(batch, 1, rows, columns)`` for images, ``(batch, size)``
        for vectors (numpy arrays or tensors); returns ``(batch,)`` float32 on the CPU.
    """

    def __init__(
        self, models: Sequence[NeuralClassifier], backend: Backend = "auto", device: torch.device | str | None = None
    ):
        if not models:
            raise ClassificationError("an inference model needs at least one classifier")
        if len({(m.inputs, m.output) for m in models}) != 1:
            raise ClassificationError("the classifiers of one inference model must read and output the same")
        self.inputs, self.output = models[0].inputs, models[0].output
        # The weights as they are now, whatever later happens to the models.
        self._snapshot = [copy.deepcopy(m.network).cpu().eval().requires_grad_(False) for m in models]
        self.requested: Backend = backend
        self.device = torch.device(device) if device is not None else next(models[0].parameters()).device
        self._runners: dict[tuple, tuple[str, object]] = {}
        self._reference: _Probability | None = None

    @classmethod
    def from_classifier(
        cls,
        model: NeuralClassifier,
        example_batch: Batch | None = None,
        backend: Backend = "auto",
        device: torch.device | str | None = None,
    ) -> InferenceModel:
        """A predictor of ``model``'s P(positive) (its weights now, eval mode).

        Args:
            model: a trained classifier (left as it is).
            example_batch: a batch of the shapes to expect; the predictor for them is built (and checked) now,
                else on the first call.
            backend: ``"auto"`` (ONNX Runtime on the CPU when installed, else ``"torch"``), ``"onnxruntime"``,
                ``"torch"`` (folded batch norms, channels_last) or ``"eager"`` (an eval-mode copy of the model).
            device: where it runs (default: where the model is); ONNX Runtime only on the CPU.
        """
        return cls.from_classifiers([model], example_batch, backend, device)

    @classmethod
    def from_classifiers(
        cls,
        models: Sequence[NeuralClassifier],
        example_batch: Batch | None = None,
        backend: Backend = "auto",
        device: torch.device | str | None = None,
    ) -> InferenceModel:
        """A predictor of the mean P(positive) of ``models`` (the fold ensemble), computed in one graph; see
        :meth:`from_classifier`."""
        predictor = cls(models, backend, device)
        if example_batch is not None:
            predictor._runner(_as_tensors(example_batch, predictor.inputs))
        return predictor

    @property
    def backend(self) -> str | None:
        """The backend of the most recently built predictor (``None`` before the first)."""
        return next(reversed(self._runners.values()))[0] if self._runners else None

    def __call__(self, batch: Batch) -> torch.Tensor:
        tensors = _as_tensors(batch, self.inputs)
        if tensors[0].shape[0] == 0:
            return torch.zeros(0)
        _, run = self._runner(tensors)
        return run(tensors)

    def _runner(self, tensors: list[torch.Tensor]) -> tuple[str, object]:
        key = tuple(tuple(t.shape[1:]) for t in tensors)
        if key not in self._runners:
            self._runners[key] = self._build([t[:2] for t in tensors])
        return self._runners[key]

    def _build(self, example: list[torch.Tensor]) -> tuple[str, object]:
        """The first backend of the requested chain that builds and matches eager on ``example``; eager itself when
        ``"auto"`` finds none.

        Raises:
            ClassificationError: a named backend that cannot be built or does not match.
        """
        reference, problems = self._eager(example), []
        for name in self._chain():
            try:
                run = _BUILDERS[name](self, example)
                difference = float((run(example) - reference).abs().max())
            except Exception as error:  # an exporter, runtime or missing package: try the next backend
                problems.append(f"{name}: {type(error).__name__}: {error}")
                continue
            if difference <= TOLERANCE:
                return name, run
            problems.append(f"{name}: differs from eager by {difference:.2g}")
        if self.requested not in ("auto", "eager"):
            raise ClassificationError(f"backend {self.requested!r} is unavailable ({'; '.join(problems)})")
        return "eager", self._eager

    def _chain(self) -> list[str]:
        if self.requested == "eager":
            return []
        if self.requested != "auto":
            return [self.requested]
        return ["onnxruntime", "torch"] if self.device.type == "cpu" else ["torch"]

    def _eager(self, tensors: list[torch.Tensor]) -> torch.Tensor:
        """The models in eager PyTorch, eval mode: the reference every backend is checked against, and the last
        resort."""
        if self._reference is None:
            self._reference = _Probability(self._snapshot, self.output).to(self.device)
        with torch.inference_mode():
            return self._reference(*(t.to(self.device) for t in tensors)).float().cpu()

    def _head(self) -> _Probability:
        """A CPU copy of the snapshot's networks behind one probability head (for a backend to transform)."""
        return _Probability([copy.deepcopy(n) for n in self._snapshot], self.output).cpu()


def _build_torch(predictor: InferenceModel, example: list[torch.Tensor]):
    """The networks with folded batch norms, channels_last for images, under inference mode."""
    head = _Probability([fold_batch_norms(n) for n in predictor._head().networks], predictor.output)
    head = head.to(predictor.device, memory_format=torch.channels_last)

    def run(tensors: list[torch.Tensor]) -> torch.Tensor:
        on = [_channels_last(t.to(predictor.device, non_blocking=True)) for t in tensors]
        with torch.inference_mode():
            return head(*on).float().cpu()

    return run


def _channels_last(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.contiguous(memory_format=torch.channels_last) if tensor.dim() == 4 else tensor


def _build_onnxruntime(predictor: InferenceModel, example: list[torch.Tensor]):
    """An ONNX Runtime session of the exported probability graph (batch axis dynamic), on the CPU with as many
    intra-op threads as torch uses now."""
    import onnxruntime

    names = list(predictor.inputs)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation and tracer warnings
        torch.onnx.export(
            predictor._head(),
            tuple(example),
            buffer,
            dynamo=False,
            input_names=names,
            output_names=["probability"],
            dynamic_axes={name: {0: "batch"} for name in [*names, "probability"]},
            opset_version=OPSET,
        )
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Idle pool threads sleep instead of spinning: on a machine whose cores other processes share, a spinning
    # thread takes the core the working one needs (and a fold ensemble's or a pipeline's other work).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = onnxruntime.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])

    def run(tensors: list[torch.Tensor]) -> torch.Tensor:
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(names, tensors)}
        return torch.from_numpy(session.run(None, feeds)[0])

    return run


_BUILDERS = {"onnxruntime": _build_onnxruntime, "torch": _build_torch}
