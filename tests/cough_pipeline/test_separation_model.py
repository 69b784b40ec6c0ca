"""The cough separator: shapes, parameter count, STFT round trip, save/load, streaming, fast path, training."""

from __future__ import annotations

import pickle

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from cough_pipeline.separation.model import (
    CoughSeparator,
    IstftDecoder,
    MaskEstimator,
    SeparatorConfig,
    StftEncoder,
    expected_parameter_count,
)
from cough_pipeline.separation.streaming import StreamingSeparator, stream
from cough_pipeline.separation.training import (
    ClipReadError,
    MixtureDataset,
    TrainingConfig,
    evaluate_loss,
    read_clip,
    train_separator,
    train_with_masks,
)

RATE = 44_100
#: LSTM(257->50) 61 800 + LSTM(50->50) 20 400 + Linear(50->257) 13 107 + BatchNorm(257) 514.
PUBLISHED_PARAMETERS = 95_821


@pytest.fixture(autouse=True, scope="module")
def _one_intra_op_thread():
    """Tiny tensors here: OpenMP barriers per LSTM step cost more than they save, and stall badly when other
    processes hold the cores, so the module runs torch single-threaded (restored afterwards)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _trained_looking(seed: int = 0) -> CoughSeparator:
    """A random separator in eval mode whose BatchNorm statistics look like real dB spectra."""
    torch.manual_seed(seed)
    model = CoughSeparator()
    with torch.no_grad():
        norm = model.masker.norm
        norm.running_mean.uniform_(-90.0, -20.0)
        norm.running_var.uniform_(50.0, 400.0)
        norm.weight.uniform_(0.5, 1.5)
        norm.bias.uniform_(-0.5, 0.5)
    return model.eval()


def _signal(seconds: float, seed: int = 1) -> torch.Tensor:
    """A cough-like mixture: noise bursts over a tone, ``(samples,)``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    wave = 0.1 * np.sin(2 * np.pi * 440 * t) + 0.02 * rng.standard_normal(t.size)
    wave[t.size // 3 : t.size // 2] += 0.3 * rng.standard_normal(t.size // 2 - t.size // 3)
    return torch.from_numpy(wave.astype(np.float32))


def test_shapes_through_encoder_masker_decoder():
    config = SeparatorConfig()
    wave = torch.randn(3, 10_000)
    magnitude, phase = StftEncoder(config)(wave)
    frames = 1 + 10_000 // 128
    assert magnitude.shape == phase.shape == (3, frames, 257)
    masker = MaskEstimator(config).eval()
    with torch.no_grad():
        mask, (h, c) = masker(magnitude)
    assert mask.shape == (3, frames, 257) and h.shape == c.shape == (2, 3, 50)
    assert float(mask.min()) >= 0.0 and float(mask.max()) <= 1.0
    assert IstftDecoder(config)(magnitude * mask, phase, 10_000).shape == (3, 10_000)
    model = CoughSeparator().eval()
    assert model(wave).shape == (3, 10_000) and model(wave[0]).shape == (10_000,)
    estimated, mixture = model.separate_magnitude(wave)
    assert estimated.shape == mixture.shape == (3, frames, 257)
    assert config.clip_samples == 220_500 and config.n_frames(config.clip_samples) == 1723


def test_parameter_count_is_the_published_96k():
    model = CoughSeparator()
    assert model.parameter_count() == expected_parameter_count() == PUBLISHED_PARAMETERS
    assert sum(p.numel() for p in model.masker.lstm.parameters()) == 61_800 + 20_400
    assert sum(p.numel() for p in model.masker.output.parameters()) == 13_107
    assert isinstance(model.masker.lstm, torch.nn.LSTM) and model.masker.lstm.batch_first


def test_stft_istft_reconstructs_and_unit_mask_is_transparent():
    config = SeparatorConfig()
    encoder, decoder = StftEncoder(config), IstftDecoder(config)
    wave = torch.randn(2, 20_000) * 0.5
    magnitude, phase = encoder(wave)
    assert (decoder(magnitude, phase, 20_000) - wave).abs().max() < 1e-5
    assert (decoder(magnitude * torch.ones_like(magnitude), phase, 20_000) - wave).abs().max() < 1e-5
    # the model itself with a mask of ones (output bias saturating the sigmoid) reproduces its input
    model = CoughSeparator().eval()
    with torch.no_grad():
        model.masker.output.weight.zero_()
        model.masker.output.bias.fill_(100.0)
    assert (model(wave) - wave).abs().max() < 1e-5


def test_save_load_round_trip(tmp_path):
    model = _trained_looking()
    folder = model.save(tmp_path / "sep", metadata={"epoch": 7, "val_loss": 0.25})
    assert (folder / "separator.pt").is_file() and (folder / "separator.json").is_file()
    loaded = CoughSeparator.load(folder)
    assert not loaded.training and loaded.metadata == {"epoch": 7, "val_loss": 0.25}
    assert loaded.config == model.config
    wave = _signal(0.5).unsqueeze(0)
    with torch.inference_mode():
        assert torch.equal(loaded(wave), model(wave))
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name


def test_load_refuses_pickled_objects(tmp_path):
    """weights_only=True: a weights file carrying an arbitrary object is rejected."""
    folder = CoughSeparator().save(tmp_path / "sep")
    state = CoughSeparator().state_dict()
    state["payload"] = pd.Timestamp("2020-01-01")  # any non-tensor class
    torch.save(state, folder / "separator.pt")
    with pytest.raises(pickle.UnpicklingError):
        CoughSeparator.load(folder)


def test_inference_path_equals_plain_forward():
    model = _trained_looking()
    fast = model.for_inference()
    waves = torch.stack([_signal(1.0, seed) for seed in range(3)])
    waves[1, :5000] = 0.0  # exact silence hits the dB floor
    with torch.inference_mode():
        assert (fast(waves) - model(waves)).abs().max() < 1e-5
        assert (fast.separate(waves, batch_size=2) - model(waves)).abs().max() < 1e-5
    with pytest.raises(RuntimeError):
        fast.train()


@pytest.mark.parametrize("chunk", [128, 441, 1000, 1])
def test_streaming_equals_offline(chunk):
    model = _trained_looking()
    wave = _signal(0.3 if chunk == 1 else 1.2)
    with torch.inference_mode():
        offline = model(wave.unsqueeze(0))[0].numpy()
    streamer = StreamingSeparator(model)
    assert streamer.latency_samples == 511
    pieces = [streamer.process(wave[i : i + chunk].numpy()) for i in range(0, wave.shape[0], chunk)]
    assert [len(piece) for piece in pieces] == [len(wave[i : i + chunk]) for i in range(0, wave.shape[0], chunk)]
    tail = streamer.flush()
    assert len(tail) == streamer.latency_samples
    delayed = np.concatenate(pieces + [tail])
    assert np.all(delayed[: streamer.latency_samples] == 0)
    assert np.abs(delayed[streamer.latency_samples :] - offline).max() < 1e-4
    # torch chunks come back as tensors; reset() starts over
    streamer.reset()
    out = torch.cat([streamer.process(wave[:700]), streamer.flush()])
    with torch.inference_mode():
        assert (out[511:] - model(wave[:700].unsqueeze(0))[0]).abs().max() < 1e-4
    with torch.inference_mode():
        prefix = model(wave[:5000].unsqueeze(0))[0].numpy()
    assert np.abs(stream(model, wave.numpy()[:5000], 333) - prefix).max() < 1e-4
    assert np.abs(stream(model, wave.numpy()[:5000], 333, single_threaded=False) - prefix).max() < 1e-4


def _write_mixtures(folder, count: int, seconds: float, seed: int) -> pd.DataFrame:
    """Tone (the "cough") plus noise mixtures as WAVs; the table the trainer reads."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    rows = []
    for index in range(count):
        cough = 0.3 * np.sin(2 * np.pi * rng.uniform(300, 3000) * t) * (t > rng.uniform(0, seconds / 2))
        mixture = cough + 0.1 * rng.standard_normal(t.size)
        for kind, wave in (("mixture", mixture), ("cough", cough)):
            sf.write(folder / f"{kind}_{seed}_{index}.wav", wave.astype(np.float32), RATE, subtype="FLOAT")
        rows.append({"mixture_path": f"mixture_{seed}_{index}.wav", "cough_path": f"cough_{seed}_{index}.wav"})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def mixtures(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixtures")
    return folder, _write_mixtures(folder, 16, 0.5, seed=0), _write_mixtures(folder, 8, 0.5, seed=1)


SHORT = SeparatorConfig(clip_seconds=0.5)


def test_dataset_pads_trims_and_checks_rate(tmp_path):
    sf.write(tmp_path / "short.wav", np.ones((1000, 2), np.float32) * [0.2, 0.4], RATE, subtype="FLOAT")
    sf.write(tmp_path / "long.wav", np.ones(30_000, np.float32), RATE, subtype="FLOAT")
    sf.write(tmp_path / "slow.wav", np.ones(1000, np.float32), 16_000)
    short = read_clip(tmp_path / "short.wav", RATE, 22_050)
    assert short.shape == (22_050,) and np.allclose(short[:1000], 0.3) and not short[1000:].any()
    assert read_clip(tmp_path / "long.wav", RATE, 22_050).shape == (22_050,)
    with pytest.raises(ClipReadError):
        read_clip(tmp_path / "slow.wav", RATE, 22_050)
    with pytest.raises(ClipReadError):
        read_clip(tmp_path / "missing.wav", RATE, 22_050)
    table = pd.DataFrame({"mixture_path": ["short.wav"], "cough_path": ["long.wav"]})
    mixture, cough = MixtureDataset(table, tmp_path, SHORT)[0]
    assert mixture.shape == cough.shape == (22_050,) and mixture.dtype == torch.float32
    with pytest.raises(ValueError):
        MixtureDataset(table.drop(columns="cough_path"), tmp_path, SHORT)


def test_training_lowers_validation_loss_and_is_reproducible(mixtures, tmp_path):
    root, train, val = mixtures
    seen = []
    training = TrainingConfig(epochs=3, batch_size=4, seed=3, device="cpu")
    result = train_separator(train, val, root, training, SHORT, on_epoch=seen.append, checkpoint_dir=tmp_path / "best")
    assert [record["epoch"] for record in result.history] == [1, 2, 3] and seen == result.history
    assert set(result.history[0]) == {"epoch", "train_loss", "val_loss", "seconds", "mixtures_per_s"}
    losses = [record["val_loss"] for record in result.history]
    assert result.best_epoch == 1 + int(np.argmin(losses))
    torch.manual_seed(3)
    untrained = CoughSeparator(SHORT)
    loader = torch.utils.data.DataLoader(MixtureDataset(val, root, SHORT), batch_size=4)
    assert min(losses) < evaluate_loss(untrained, loader, "cpu")
    assert evaluate_loss(result.model, loader, "cpu") == pytest.approx(min(losses), rel=1e-5)
    assert CoughSeparator.load(tmp_path / "best").metadata["epoch"] == result.best_epoch
    again = train_separator(train, val, root, training, SHORT)
    for name, tensor in result.model.state_dict().items():
        assert torch.equal(again.model.state_dict()[name], tensor), name
    assert again.history[-1]["val_loss"] == result.history[-1]["val_loss"]


def test_training_with_fixed_masks_keeps_pruned_weights_zero(mixtures):
    root, train, val = mixtures
    torch.manual_seed(5)
    pruned = CoughSeparator(SHORT)
    names = ("masker.lstm.weight_ih_l0", "masker.lstm.weight_hh_l1", "masker.output.weight")
    parameters = dict(pruned.named_parameters())
    masks = {name: (torch.rand_like(parameters[name]) > 0.5).float() for name in names}
    before = {name: parameters[name].detach().clone() for name in names}
    training = TrainingConfig(epochs=2, batch_size=8, seed=0, device="cpu")
    result = train_with_masks(pruned, masks, train, val, root, training)
    trained = dict(result.model.named_parameters())
    for name, mask in masks.items():
        weights = trained[name].detach()
        assert torch.all(weights[mask == 0] == 0), name
        assert not torch.equal(weights[mask == 1], before[name][mask == 1]), name
        assert torch.equal(parameters[name].detach(), before[name])  # the caller's model is untouched
    with pytest.raises(KeyError):
        train_with_masks(pruned, {"masker.lstm.weight": masks[names[0]]}, train, val, root, TrainingConfig(epochs=1))


def test_training_config_checks_its_fields():
    assert TrainingConfig(device=torch.device("cpu")).device == "cpu"
    for bad in ({"epochs": 0}, {"batch_size": 0}, {"learning_rate": 0.0}, {"seed": -1}, {"num_threads": 0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            TrainingConfig(**bad)
