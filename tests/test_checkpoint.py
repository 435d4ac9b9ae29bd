"""Checkpoints: identical outputs after a round trip, weights_only loading, clear refusals."""

from __future__ import annotations

import fractions

import pytest
import torch

from models.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from models.networks import build_network, get_config

SMALL = get_config("nmnist").with_changes(channels=(4, 8), hidden=16, steps=2)


def _trained_model(config=SMALL):
    torch.manual_seed(0)
    model = build_network(config)
    model.train()
    with torch.no_grad():  # move BN running stats and weights off their initial values
        model(torch.rand(2, 3, *config.input_shape) * 3)
        for param in model.parameters():
            param.add_(torch.randn_like(param) * 0.1)
    return model.eval()


def test_round_trip_gives_identical_outputs(tmp_path):
    model = _trained_model()
    extra = {"epoch": 7, "val_accuracy": 0.93, "history": [0.5, 0.7], "optimiser": {"lr": 1e-3}}
    path = save_checkpoint(tmp_path / "sub" / "best.pt", model, SMALL, extra=extra)
    loaded, config, loaded_extra = load_checkpoint(path, map_location="cpu")
    assert config == SMALL and loaded_extra == extra
    assert not loaded.training
    x = torch.rand(2, 2, *SMALL.input_shape) * 3
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_file_is_plain_data_for_weights_only_loading(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _trained_model(), SMALL)
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == FORMAT_VERSION
    assert payload["class_names"] == list(SMALL.class_names)
    assert payload["compression"] == {
        "input_width": 34,
        "input_height": 34,
        "spatial_factor": 1,
        "steps": 2,
        "window_us": 300_000,
        "tau_s_us": None,
        "mode": "stc",
    }
    assert payload["config"]["channels"] == [4, 8]


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _trained_model(), SMALL)
    payload = torch.load(path, weights_only=True)
    payload["config"]["channels"] = [4, 16]  # config now describes another network
    torch.save(payload, path)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    assert "blocks.1.conv.weight has shape [8, 4, 3, 3], config needs [16, 4, 3, 3]" in message


def test_missing_and_unexpected_weights_are_named(tmp_path):
    # Saved with the synaptic filter, config edited to say it has none.
    path = save_checkpoint(tmp_path / "m.pt", _trained_model(), SMALL)
    payload = torch.load(path, weights_only=True)
    payload["config"]["synaptic_filter"] = False
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=r"unexpected weights \['blocks.0.lambda_weight'"):
        load_checkpoint(path)


def test_expected_config_mismatch_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _trained_model(), SMALL)
    load_checkpoint(path, expected_config=SMALL)  # the same config loads
    other = SMALL.with_changes(steps=4, levels=1)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path, expected_config=other)
    message = str(info.value)
    assert str(path) in message
    assert "compression.steps: 2 != 4" in message and "levels: 4 != 1" in message


def test_unknown_format_version_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _trained_model(), SMALL)
    payload = torch.load(path, weights_only=True)
    payload["format_version"] = FORMAT_VERSION + 1
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=f"unknown format version {FORMAT_VERSION + 1}"):
        load_checkpoint(path)


def test_unknown_config_field_is_refused(tmp_path):
    path = save_checkpoint(tmp_path / "m.pt", _trained_model(), SMALL)
    payload = torch.load(path, weights_only=True)
    payload["config"]["temperature"] = 2.0
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="invalid config: .*'temperature'"):
        load_checkpoint(path)


def test_non_checkpoints_are_refused_with_the_file_named(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a torch file" * 10)
    with pytest.raises(CheckpointError, match="garbage.pt: not a PyTorch checkpoint"):
        load_checkpoint(garbage)
    weights_only = tmp_path / "bare.pt"
    torch.save(_trained_model().state_dict(), weights_only)
    with pytest.raises(CheckpointError, match="bare.pt: not an stcsnn-checkpoint file"):
        load_checkpoint(weights_only)
    with pytest.raises(CheckpointError, match="missing.pt: no such file"):
        load_checkpoint(tmp_path / "missing.pt")


def test_files_that_are_no_checkpoint_get_one_line_without_pytorchs_advice(tmp_path):
    """A text file named .pt, a pickle of a class, a cut-off and an empty file: each
    refused in one line saying what is wrong, never advising to load it unsafely."""
    text = tmp_path / "x.pt"
    text.write_text("hello, this is a note\n")
    pickled = tmp_path / "fraction.pt"
    torch.save({"weight": fractions.Fraction(1, 2)}, pickled)
    whole = save_checkpoint(tmp_path / "whole.pt", _trained_model(), SMALL).read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(whole[: len(whole) // 2])
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    expected = {
        text: "x.pt: not a PyTorch checkpoint (a text file)",
        pickled: "fraction.pt: refused: it holds a pickled fractions.Fraction, not plain data",
        cut: "cut.pt: damaged PyTorch file",
        empty: "empty.pt: empty file, not a PyTorch checkpoint",
    }
    for path, start in expected.items():
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(path)
        message = str(caught.value)
        assert message.startswith(f"{tmp_path}/{start}"), message
        assert "\n" not in message and "weights_only" not in message, message
        assert len(message) < 200 + len(str(tmp_path)), message


def test_extra_must_be_plain_data(tmp_path):
    with pytest.raises(TypeError, match=r"extra\['when'\]: object cannot be loaded"):
        save_checkpoint(tmp_path / "m.pt", _trained_model(), SMALL, extra={"when": object()})
    assert not (tmp_path / "m.pt").exists()


def test_saving_a_model_with_another_config_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="model does not match config"):
        save_checkpoint(tmp_path / "m.pt", _trained_model(), SMALL.with_changes(hidden=32))
    assert not (tmp_path / "m.pt").exists()


def test_str_subclasses_are_refused_before_they_break_loading(tmp_path):
    # torch.__version__ is a str subclass: it would save, then fail weights_only loading.
    with pytest.raises(TypeError, match=r"extra\['torch'\]: TorchVersion cannot be loaded"):
        save_checkpoint(
            tmp_path / "m.pt", _trained_model(), SMALL, extra={"torch": torch.__version__}
        )


def test_a_failed_save_keeps_the_old_checkpoint_and_leaves_no_temporary(tmp_path, monkeypatch):
    model = _trained_model()
    path = save_checkpoint(tmp_path / "best.pt", model, SMALL, extra={"epoch": 1})

    def crash_halfway(payload, target):
        with open(target, "wb") as half:
            half.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash_halfway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(path, model, SMALL, extra={"epoch": 2})
    monkeypatch.undo()
    assert load_checkpoint(path)[2] == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]


def test_concurrent_saves_to_one_path_do_not_mix(tmp_path):
    import threading

    model = _trained_model()
    path = tmp_path / "best.pt"
    errors = []

    def save(epoch):
        try:
            for _ in range(5):
                save_checkpoint(path, model, SMALL, extra={"epoch": epoch})
        except Exception as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=save, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert load_checkpoint(path)[2]["epoch"] in range(4)
    assert [p.name for p in tmp_path.iterdir()] == ["best.pt"]
