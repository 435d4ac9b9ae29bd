"""Where the data folder is found (replay/paths.py): STCSNN_DATA, beside a development
checkout, ./data, the per-user folder; and the message that says where it looked."""

from __future__ import annotations

from replay import paths


def test_data_is_found_in_order_and_the_places_are_named(tmp_path, monkeypatch):
    project = tmp_path / "checkout" / "stcsnn"
    beside = tmp_path / "checkout" / "shared" / "data"
    here = tmp_path / "work"
    user = tmp_path / "xdg"
    for folder in (project, here / "data", user / "stcsnn", beside):
        folder.mkdir(parents=True)
    monkeypatch.setattr(paths, "PROJECT_ROOT", project)
    monkeypatch.chdir(here)
    monkeypatch.setenv("XDG_DATA_HOME", str(user))
    monkeypatch.delenv("STCSNN_DATA", raising=False)
    assert paths.data_root() == beside
    beside.rmdir()
    assert paths.data_root() == here / "data"
    (here / "data").rmdir()
    assert paths.data_root() == user / "stcsnn"
    (user / "stcsnn").rmdir()
    assert paths.data_root() == beside  # nothing found: the first place, for messages
    looked = paths.where_data_was_looked_for()
    assert str(beside) in looked and str(here / "data") in looked and str(user / "stcsnn") in looked
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("STCSNN_DATA", str(empty))
    assert paths.data_root() == empty  # set: used as given, even empty
    assert paths.where_data_was_looked_for() == f"STCSNN_DATA={empty}"
