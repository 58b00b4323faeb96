"""Build, once per lock hash, the archive every node installs its environment from.

Layout of the cache (~/.cache/daskfleet/wheelhouse/<hash>/): wheels/ (every pinned wheel and the
project's own), lock.txt (pins with sha256 of each file, installed with --require-hashes), uv (the
installer binary), and <hash>.tar next to the folder: the one file Ansible ships, with
<hash>.tar.sha256 beside it: the digest every node checks the archive against when it fetches it
from another node instead of from this machine (playbooks/roles/python_env).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import logging
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from runner.errors import ProvisionError
from runner.log import Progress, Say
from runner.provision.lock import PROJECT, Lock

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Wheelhouse:
    lock: Lock
    dir: Path
    archive: Path

    @property
    def hash(self) -> str:
        return self.lock.hash

    @property
    def sha256(self) -> str:
        return archive_sha256(self.archive)


def cache_root() -> Path:
    base = os.environ.get("DASKFLEET_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(base or Path.home() / ".cache") / "daskfleet" / "wheelhouse"


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def sha256_file(archive: Path) -> Path:
    return archive.with_name(archive.name + ".sha256")


def archive_sha256(archive: Path) -> str:
    """The archive's sha256, from its .sha256 file (written when it was built; an archive cached
    before those files existed gets one now)."""
    side = sha256_file(archive)
    try:
        digest = side.read_text().strip()
    except FileNotFoundError:
        digest = ""
    if len(digest) != 64:
        digest = _sha256(archive)
        tmp = side.with_name(f"{side.name}.tmp-{os.getpid()}")
        tmp.write_text(digest + "\n")
        tmp.replace(side)
    return digest


def _run(args: list[str], what: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(args, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise ProvisionError(f"wheelhouse: {what} failed (exit {proc.returncode}):\n{tail}")


def _uv_binary() -> Path:
    uv = Path(sys.executable).parent / "uv"
    if uv.exists():
        return uv
    found = shutil.which("uv")
    if found is None:
        raise ProvisionError("wheelhouse: the `uv` binary is missing; run `make venv`.")
    return Path(found)


def _platform_args(machine: str) -> list[str]:
    """Ask pip for wheels of the target's platform, whatever this machine is. The target's glibc
    is taken to be at least this machine's (manylinux tags up to it are accepted)."""
    glibc = platform.libc_ver()[1] or "2.28"
    minor = glibc.split(".")[1]
    py = f"{sys.version_info.major}{sys.version_info.minor}"
    return [
        "--only-binary=:all:", "--implementation", "cp", "--python-version", py,
        "--abi", f"cp{py}", "--abi", "abi3", "--abi", "none",
        # pip matches --platform tags exactly: list every glibc the target can run.
        *[a for m in range(17, int(minor) + 1) for a in ("--platform", f"manylinux_2_{m}_{machine}")],
        "--platform", f"manylinux2014_{machine}", "--platform", f"linux_{machine}",
    ]


def _uv_for(machine: str, dest: Path, root: Path, progress: Progress | None) -> None:
    """The uv binary the nodes install with: ours on the same architecture, otherwise the
    same uv version's binary for theirs, taken from its PyPI wheel."""
    say = Say(progress, logger)
    if machine == platform.machine():
        shutil.copy2(_uv_binary(), dest)
        return
    version = importlib.metadata.version("uv")
    cache = root / "uv" / f"{version}-{machine}"
    if not cache.exists():
        say(f"wheelhouse: downloading uv {version} for {machine}")
        tmp = cache.with_name(cache.name + f".tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--dest", str(tmp),
              *_platform_args(machine), f"uv=={version}"], f"pip download of uv for {machine}")
        wheel = next(tmp.glob("uv-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(".data/scripts/uv"))
            (tmp / "uv").write_bytes(zf.read(member))
        wheel.unlink()
        tmp.rename(cache)
    shutil.copy2(cache / "uv", dest)
    os.chmod(dest, 0o755)


REQUIREMENTS_LOCK = PROJECT_ROOT / "requirements.lock"


def locked_hashes(text: str) -> dict[tuple[str, str], list[str]]:
    """(canonical name, version) -> the sha256 hashes requirements.lock allows for it (every
    file of that release: each platform's wheels and the sdist)."""
    out: dict[tuple[str, str], list[str]] = {}
    for entry in text.replace("\\\n", " ").splitlines():
        words = entry.split("#", 1)[0].split()
        if not words or "==" not in words[0]:
            continue
        name, version = words[0].split("==", 1)
        name = name.split("[", 1)[0].lower().replace("_", "-").replace(".", "-")
        out[(name, version)] = [w.split("=", 1)[1] for w in words[1:]
                                if w.startswith("--hash=")]
    return out


def hashed_requirements(lock: Lock, lock_file: Path | None = None) -> str:
    """The lock's pins with the hashes requirements.lock holds for them, for `pip download
    --require-hashes`: a wheel whose bytes are not the ones locked is refused, never trusted on
    first download."""
    lock_file = lock_file or REQUIREMENTS_LOCK
    try:
        known = locked_hashes(lock_file.read_text())
    except OSError as e:
        raise ProvisionError(f"wheelhouse: cannot read {lock_file} ({e.strerror}): the nodes' "
                             "wheels are checked against its hashes; run from a checkout of "
                             "daskfleet, set up with `make venv`.") from None
    lines, missing = [], []
    for n, v in lock.pins:
        hashes = known.get((n, v))
        if not hashes:
            missing.append(f"{n}=={v}")
            continue
        lines.append(f"{n}=={v} " + " ".join(f"--hash=sha256:{h.removeprefix('sha256:')}"
                                           for h in hashes))
    if missing:
        raise ProvisionError(
            f"wheelhouse: {', '.join(missing)} installed here but not in {lock_file} with hashes "
            "(this environment differs from the lock); run `make venv` to install the locked "
            "versions, or regenerate the lock (docs/development.md, 'The lock').")
    return "\n".join(lines) + "\n"


def _pinned_wheels(lock: Lock, root: Path, progress: Progress | None = None) -> Path:
    """The third-party wheels, cached by the pins alone so a code change does not refetch them;
    downloaded with --require-hashes against requirements.lock."""
    say = Say(progress, logger)
    pins = [f"{n}=={v}" for n, v in lock.pins]
    key = hashlib.sha256(f"{lock.python} {lock.machine} {pins}".encode()).hexdigest()[:16]
    deps = root / "deps" / key
    if deps.exists():
        return deps
    requirements = hashed_requirements(lock)
    say(f"wheelhouse: downloading {len(pins)} pinned wheels (once per set of pins)")
    tmp = deps.with_name(f"{key}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    (tmp.parent / f"{key}.requirements-{os.getpid()}.txt").write_text(requirements)
    try:
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--require-hashes",
              "--dest", str(tmp), *_platform_args(lock.machine),
              "-r", str(tmp.parent / f"{key}.requirements-{os.getpid()}.txt")],
             "pip download of the pinned wheels (checked against requirements.lock's hashes)")
    finally:
        (tmp.parent / f"{key}.requirements-{os.getpid()}.txt").unlink(missing_ok=True)
    tmp.rename(deps)
    return deps


def _prune(root: Path, keep: int = 4) -> None:
    """Keep the newest few environments' archives; the deps cache is shared and kept."""
    archives = sorted(root.glob("*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in archives[keep:]:
        old.unlink(missing_ok=True)
        sha256_file(old).unlink(missing_ok=True)
        shutil.rmtree(old.with_suffix(""), ignore_errors=True)


@contextlib.contextmanager
def _cache_lock(root: Path, say: Say) -> Iterator[None]:
    """The cache to one builder at a time: two `up`s (or test sessions) started together on a
    cold cache would otherwise each download and rename into the same folders."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"wheelhouse: waiting for another daskfleet building in {root}")
            fcntl.flock(f, fcntl.LOCK_EX)
        yield  # the lock goes with the file's closing


def build(lock: Lock, progress: Progress | None = None) -> Wheelhouse:
    """Return the cached wheelhouse for `lock`, building it first when it is not cached."""
    root = cache_root()
    with _cache_lock(root, Say(progress, logger)):
        return _cached_or_built(lock, root, progress)


def _cached_or_built(lock: Lock, root: Path, progress: Progress | None) -> Wheelhouse:
    say = Say(progress, logger)
    final = root / lock.hash
    archive = root / f"{lock.hash}.tar"
    if (final / "lock.txt").exists() and archive.exists():
        archive_sha256(archive)
        say(f"wheelhouse: cached {archive} ({archive.stat().st_size / 1e6:.0f} MB)")
        return Wheelhouse(lock, final, archive)
    t0 = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{lock.hash}.building-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    wheels = tmp / "wheels"
    wheels.mkdir(parents=True)
    for dep in _pinned_wheels(lock, root, progress).iterdir():
        os.link(dep, wheels / dep.name)  # hard links: the cache holds each wheel once
    say("wheelhouse: building the project's wheel")
    _run([str(_uv_binary()), "build", "--wheel", "--quiet", "--out-dir", str(wheels),
          str(PROJECT_ROOT)], f"building the {PROJECT} wheel")
    project_wheels = []
    for wheel in sorted(wheels.iterdir()):
        if wheel.name.startswith(PROJECT + "-"):
            project_wheels.append(wheel.name)
    if len(project_wheels) != 1:
        raise ProvisionError(f"wheelhouse: expected one {PROJECT} wheel, found {project_wheels}")
    # Re-emit the pins with the hash of every file we hold, so uv refuses anything else.
    by_name: dict[str, list[str]] = {}
    for wheel in sorted(wheels.glob("*.whl")):
        name = wheel.name.split("-")[0].lower().replace("_", "-")
        by_name.setdefault(name, []).append(f"--hash=sha256:{_sha256(wheel)}")
    lines = [ln for ln in lock.text().splitlines() if ln.startswith("#")]
    for n, v in lock.pins:
        hashes = by_name.get(n)
        if not hashes:
            raise ProvisionError(f"wheelhouse: no wheel for {n}=={v} was downloaded")
        lines.append(f"{n}=={v} " + " ".join(hashes))
    (tmp / "lock.txt").write_text("\n".join(lines) + "\n")
    (tmp / "project-wheel.txt").write_text(project_wheels[0] + "\n")
    (tmp / "lock-hash.txt").write_text(lock.hash + "\n")
    _uv_for(lock.machine, tmp / "uv", root, progress)
    tar_tmp = root / f"{lock.hash}.tar.tmp-{os.getpid()}"
    with tarfile.open(tar_tmp, "w") as tar:  # uncompressed: wheels are zip files already
        tar.add(tmp, arcname=lock.hash)
    # Before the archive is in place: an archive in the cache always has its digest.
    sha256_file(archive).write_text(_sha256(tar_tmp) + "\n")
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    tar_tmp.rename(archive)
    _prune(root)
    say(f"wheelhouse: built {archive} ({archive.stat().st_size / 1e6:.0f} MB) "
        f"in {time.monotonic() - t0:.1f}s")
    return Wheelhouse(lock, final, archive)
