"""Atomic writes: all or nothing under the final name, and the permissions of any new file."""

import os
import stat

import pytest

from mmbench.util.io import atomic_open, save_npy, write_json


@pytest.fixture
def umask():
    def set_to(mask: int) -> None:
        os.umask(mask)

    old = os.umask(0o022)
    yield set_to
    os.umask(old)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o077, 0o002])
def test_written_files_take_the_umask_not_mkstemps_0600(tmp_path, umask, mask):
    import numpy as np

    umask(mask)
    write_json(tmp_path / "a.json", {"x": 1})
    save_npy(tmp_path / "b.npy", np.zeros(3))
    with atomic_open(tmp_path / "c.trec", "wb", fsync=False) as f:
        f.write(b"q Q0 d 1 0.5 t\n")
    for name in ("a.json", "b.npy", "c.trec"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~mask, name


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "r.json"
    write_json(target, {"old": True})
    with pytest.raises(RuntimeError):
        with atomic_open(target) as f:
            f.write('{"new": ')
            raise RuntimeError("killed half-way")
    assert target.read_text().startswith('{\n  "old": true')
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]
