import numpy as np
import pytest

from core.events import SensorSize, make_events
from models.augment import EventAugment

SENSOR = SensorSize(64, 64)
IDENTITY = EventAugment(shift=0, scale=(1, 1), rotate_deg=0, stretch=(1, 1), drop=0, noise_hz=0)


def some_events(count=5_000, seed=0):
    rng = np.random.default_rng(seed)
    t = np.sort(rng.integers(0, 1_000_000, count))
    return make_events(
        t, rng.integers(16, 48, count), rng.integers(16, 48, count), rng.integers(0, 2, count)
    )


def test_identity_settings_return_the_events_unchanged():
    events = some_events()
    rng = np.random.default_rng(1)
    out = IDENTITY.apply(events, SENSOR, 0, IDENTITY.draw_stretch(rng), 1_000_000, rng)
    np.testing.assert_array_equal(out, events)


def test_stretch_plays_the_events_faster_from_the_crop_start():
    events = some_events()
    fast = EventAugment(shift=0, scale=(1, 1), rotate_deg=0, stretch=(2, 2), drop=0, noise_hz=0)
    rng = np.random.default_rng(0)
    speed = fast.draw_stretch(rng)
    assert speed == pytest.approx(2.0)
    out = fast.apply(events, SENSOR, 100, speed, 500_000, rng)
    np.testing.assert_array_equal(out["timestamp"], 100 + (events["timestamp"] - 100) * 2)
    np.testing.assert_array_equal(out["x"], events["x"])


def test_a_shift_moves_every_event_by_one_amount_and_drops_those_off_the_sensor():
    events = make_events([0, 1, 2], [10, 20, 60], [32, 32, 32], [1, 0, 1])
    shifted = EventAugment(
        shift=0.1, scale=(1, 1), rotate_deg=0, stretch=(1, 1), drop=0, noise_hz=0
    )
    for seed in range(20):
        out = shifted.apply(events, SENSOR, 0, 1.0, 10, np.random.default_rng(seed))
        assert 2 <= len(out) <= 3
        dx = out["x"][:2] - events["x"][:2]
        assert dx[0] == dx[1] and abs(dx[0]) <= 7
        assert ((out["x"] >= 0) & (out["x"] < 64) & (out["y"] >= 0) & (out["y"] < 64)).all()


def test_drop_and_noise_change_the_count_as_their_rates_say():
    events = some_events(20_000)
    drop = EventAugment(shift=0, scale=(1, 1), rotate_deg=0, stretch=(1, 1), drop=0.5, noise_hz=0)
    kept = [
        len(drop.apply(events, SENSOR, 0, 1.0, 10**6, np.random.default_rng(s))) for s in range(50)
    ]
    assert 0.70 < np.mean(kept) / len(events) < 0.80  # drop-out uniform in [0, 0.5): 25 % lost
    noisy = EventAugment(shift=0, scale=(1, 1), rotate_deg=0, stretch=(1, 1), drop=0, noise_hz=2.0)
    added = [
        len(noisy.apply(events[:0], SENSOR, 0, 1.0, 10**6, np.random.default_rng(s)))
        for s in range(50)
    ]
    assert 0.8 < np.mean(added) / (1.0 * 64 * 64) < 1.2  # rate uniform in [0, 2) Hz per pixel
    out = noisy.apply(events, SENSOR, 0, 1.0, 10**6, np.random.default_rng(3))
    assert (np.diff(out["timestamp"]) >= 0).all()
    assert set(np.unique(out["polarity"])) <= {0, 1}


def test_the_same_seed_gives_the_same_crop():
    events = some_events()
    a = EventAugment().apply(events, SENSOR, 0, 1.1, 10**6, np.random.default_rng(7))
    b = EventAugment().apply(events, SENSOR, 0, 1.1, 10**6, np.random.default_rng(7))
    np.testing.assert_array_equal(a, b)


def test_settings_round_trip_and_refuse_what_they_do_not_know():
    settings = EventAugment(noise_hz=0.0, scale=(0.9, 1.1))
    assert EventAugment.from_dict(settings.to_dict()) == settings
    assert EventAugment.from_dict({"scale": [0.9, 1.1], "noise_hz": 0}) == settings
    with pytest.raises(ValueError, match="unknown augmentation settings"):
        EventAugment.from_dict({"flip": True})
    with pytest.raises(ValueError, match="drop must be"):
        EventAugment(drop=1.0)


def test_the_train_command_takes_augmentation_as_json(tmp_path):
    from stcsnn.commands.train import parse_augment

    assert parse_augment("{}") == {}
    assert parse_augment('{"noise_hz": 0}') == {"noise_hz": 0}
    with pytest.raises(ValueError, match="--augment must be a JSON object"):
        parse_augment("noise")
    with pytest.raises(ValueError, match="--augment must be a JSON object"):
        parse_augment("[1]")


def test_mirror_reflects_x_about_the_centre_and_keeps_y_time_and_polarity():
    events = some_events()
    mirror = EventAugment(
        shift=0, scale=(1, 1), rotate_deg=0, stretch=(1, 1), drop=0, noise_hz=0, mirror=1.0
    )
    out = mirror.apply(events, SENSOR, 0, 1.0, 1_000_000, np.random.default_rng(0))
    np.testing.assert_array_equal(out["x"], 63 - events["x"])
    for name in ("timestamp", "y", "polarity"):
        np.testing.assert_array_equal(out[name], events[name])


def test_mirror_applies_to_its_share_of_crops():
    events = make_events([0], [10], [32], [1])
    half = EventAugment(
        shift=0, scale=(1, 1), rotate_deg=0, stretch=(1, 1), drop=0, noise_hz=0, mirror=0.5
    )
    xs = [
        half.apply(events, SENSOR, 0, 1.0, 10, np.random.default_rng(s))["x"][0] for s in range(400)
    ]
    assert set(xs) == {10, 53}
    assert 0.4 < np.mean(np.array(xs) == 53) < 0.6
    for wrong in (1.5, True):
        with pytest.raises(ValueError, match="mirror must be the share of crops mirrored"):
            EventAugment(mirror=wrong)
