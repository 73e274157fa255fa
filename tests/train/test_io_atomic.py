"""The atomic write, by the order of what reaches the disk: the temporary file holds every byte
and is fsynced before ``os.replace`` puts it in place, and a crash between the write and the
replace leaves the previous file as it was."""
import os

import numpy as np
import pytest

import minigen as mg


@pytest.fixture
def recorded(monkeypatch):
    """Pass-through os.fsync and os.replace that record, in order, (call, inode, size)."""
    events = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(fd):
        info = os.fstat(fd)
        events.append(("fsync", info.st_ino, info.st_size))
        return fsync(fd)

    def recording_replace(src, dst):
        info = os.stat(src)
        events.append(("replace", info.st_ino, info.st_size))
        return replace(src, dst)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    return events


def test_every_byte_is_fsynced_before_the_replace(tmp_path, recorded):
    path = tmp_path / "c.npz"
    mg.save({"w": np.arange(50_000.0)}, path)
    final = os.stat(path)
    replaces = [i for i, e in enumerate(recorded) if e[0] == "replace"]
    assert len(replaces) == 1
    moved = recorded[replaces[0]]
    assert moved[1:] == (final.st_ino, final.st_size)      # the temporary file became c.npz
    synced = [e for e in recorded[:replaces[0]] if e[0] == "fsync" and e[1] == moved[1]]
    assert synced and synced[-1][2] == final.st_size       # fsynced whole, then replaced


def test_a_crash_between_the_write_and_the_replace_keeps_the_previous_file(tmp_path,
                                                                          monkeypatch):
    path = tmp_path / "c.npz"
    mg.save({"w": np.arange(3.0)}, path)

    def crash(src, dst):
        raise KeyboardInterrupt          # killed after the write, before the rename

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        mg.save({"w": np.zeros(5)}, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(mg.load(path)["w"], np.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]  # no temporary file left


def test_atomic_write_flushes_a_buffered_writer_before_the_fsync(tmp_path, recorded):
    """A writer that leaves its bytes in Python's buffer (unlike the zip writer, which flushes
    itself): the fsync must still see all 100 bytes."""
    path = tmp_path / "notes.bin"
    mg.io.atomic_write(path, lambda f: f.write(b"x" * 100))
    assert path.read_bytes() == b"x" * 100
    synced = [e for e in recorded if e[0] == "fsync" and e[1] == os.stat(path).st_ino]
    assert synced and synced[-1][2] == 100
