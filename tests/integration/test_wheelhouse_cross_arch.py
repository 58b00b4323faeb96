"""A wheelhouse for nodes of another architecture (aarch64) is built on this x86_64 machine from
the registry: every pinned wheel for that platform, the project's wheel, and uv's aarch64 binary.
(It downloads about 250 MB once; later runs use the cache.)"""

from __future__ import annotations

import platform
import struct
import tarfile

import pytest

from runner.provision.lock import derive_lock
from runner.provision.wheelhouse import _platform_args, build

EM_AARCH64 = 183  # ELF e_machine


def test_platform_args_ask_for_the_targets_wheels():
    args = _platform_args("aarch64")
    platforms = [args[i + 1] for i, a in enumerate(args) if a == "--platform"]
    assert platforms and all(p.endswith("_aarch64") for p in platforms)
    assert "manylinux_2_17_aarch64" in platforms and "--only-binary=:all:" in args


@pytest.mark.integration  # downloads from the package registry: the full tier
@pytest.mark.skipif(platform.machine() != "x86_64",
                    reason="not applicable here: checks a cross build from x86_64")
def test_an_aarch64_wheelhouse_has_aarch64_wheels_and_uv():
    lock = derive_lock("aarch64")
    assert lock.hash != derive_lock().hash  # the architecture is part of the environment's name
    wh = build(lock, progress=lambda *_: None)
    names = [p.name for p in (wh.dir / "wheels").iterdir()]
    numpy = [n for n in names if n.startswith("numpy-")]
    assert len(numpy) == 1 and "aarch64" in numpy[0], numpy
    assert not [n for n in names if "x86_64" in n], names
    head = (wh.dir / "uv").read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and struct.unpack("<H", head[18:20])[0] == EM_AARCH64
    pins = [ln for ln in (wh.dir / "lock.txt").read_text().splitlines() if not ln.startswith("#")]
    assert len(pins) == len(lock.pins) and all("--hash=sha256:" in ln for ln in pins)
    with tarfile.open(wh.archive) as tar:
        assert f"{lock.hash}/uv" in tar.getnames()


@pytest.mark.integration  # downloads from the package registry: the full tier
def test_a_wheel_whose_bytes_are_not_the_locked_ones_is_refused(tmp_path, monkeypatch):
    from runner.errors import ProvisionError
    from runner.provision import wheelhouse
    from runner.provision.lock import Lock

    lock = derive_lock()
    version = lock.version_of("snowballstemmer")  # a small wheel
    tampered = tmp_path / "requirements.lock"
    tampered.write_text(f"snowballstemmer=={version} \\\n    --hash=sha256:{'0' * 64}\n")
    monkeypatch.setattr(wheelhouse, "REQUIREMENTS_LOCK", tampered)
    one = Lock(lock.python, lock.machine, (("snowballstemmer", version),), "d")
    with pytest.raises(ProvisionError, match="checked against requirements.lock's hashes") as e:
        wheelhouse._pinned_wheels(one, tmp_path / "cache", progress=lambda *_: None)
    assert "DO NOT MATCH THE HASHES" in str(e.value), e.value
    # nothing was cached as if it were the locked set of wheels
    assert [p.name for p in (tmp_path / "cache" / "deps").iterdir() if ".tmp-" not in p.name] == []
