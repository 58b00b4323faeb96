"""The nodes' environment on an ephemeral cluster, and its check.

The instances run a public Dask image whose tag matches this machine's dask and Python
(ghcr.io/dask/dask:<dask>-py<X.Y>), with every package of this machine's worker lock pinned in
EXTRA_PIP_PACKAGES (the image's entry point pip-installs them before Dask starts). The project's
own code is not on PyPI: the client uploads it as one file (the project's wheel, as a .zip named
by the source digest) to the scheduler and every worker before anything else. Then, before the
job runs, every package of the lock is compared between client, scheduler and workers, and every
node must import `runner` from that upload; any difference refuses the run.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

from runner.errors import EnvironmentMismatchError, ProvisionError
from runner.log import Progress, Say

logger = logging.getLogger(__name__)

IMAGE_REPO = "ghcr.io/dask/dask"


def default_image(lock) -> str:
    dask = lock.version_of("dask")
    return f"{IMAGE_REPO}:{dask}-py{lock.python}"


def pinned_packages(lock) -> str:
    """EXTRA_PIP_PACKAGES: every package of the lock at its exact version."""
    return " ".join(f"{n}=={v}" for n, v in lock.pins)


def env_vars(lock) -> dict[str, str]:
    """The container's environment (passed as `docker run -e` in the user data)."""
    return {"EXTRA_PIP_PACKAGES": pinned_packages(lock),
            # the scheduler and workers never ask the instance metadata service for credentials
            "AWS_EC2_METADATA_DISABLED": "true"}


def project_upload(dest_dir: Path, lock, progress: Progress | None = None) -> Path:
    """The project's wheel (runner/ and its dist-info) as daskfleet-<digest>.zip: importable from
    sys.path once uploaded, and its metadata gives the `daskfleet` version the check compares."""
    from runner.provision.wheelhouse import PROJECT_ROOT

    name = f"daskfleet-{lock.project_digest[:16]}.zip"
    target = dest_dir / name
    if target.exists():
        return target
    build = dest_dir / "build"
    build.mkdir(parents=True, exist_ok=True)
    uv = Path(sys.executable).parent / "uv"
    proc = subprocess.run([str(uv if uv.exists() else "uv"), "build", "--wheel", "--quiet",
                           "--out-dir", str(build), str(PROJECT_ROOT)], capture_output=True, text=True)
    wheels = sorted(build.glob("daskfleet-*.whl"))
    if proc.returncode != 0 or len(wheels) != 1:
        raise ProvisionError(f"ephemeral: building the project's wheel failed: "
                             f"{(proc.stderr or proc.stdout).strip()[-800:]}")
    wheels[0].rename(target)
    Say(progress, logger)(f"project code packed for upload: {name} "
                          f"({target.stat().st_size / 1e3:.0f} kB)")
    return target


def check_environment(client, upload_name: str) -> dict:
    """Refuse the cluster unless every node runs this machine's lock and the uploaded code.

    `client.get_versions` is asked for every package of the lock plus daskfleet (distributed's
    own check only warns); `runner` must come from the upload `upload_name` on every node."""
    from runner.cluster.versions import compare_versions
    from runner.provision.lock import WORKER_ROOTS, closure

    names = sorted(closure(WORKER_ROOTS)) + ["daskfleet"]
    try:
        versions = compare_versions(client.get_versions(packages=names), names)
    except EnvironmentMismatchError as e:
        rows = str(e).splitlines()[:-1]  # its last line is advice for long-lived clusters
        raise EnvironmentMismatchError(
            "\n".join(rows) + "\nThe image and its EXTRA_PIP_PACKAGES did not give this machine's "
            "lock: set ephemeral.docker_image to an image with these versions (or one that can "
            "pip-install them at start); nothing was run, and the cluster is removed.") from None

    def origin() -> str:  # defined here, so cloudpickle sends it by value
        try:
            import runner
        except ImportError:
            return "no `runner` package"
        return str(runner.__file__)

    origins = {"scheduler": client.run_on_scheduler(origin),
               **{f"worker {a}": o for a, o in client.run(origin).items()}}
    wrong = [f"  {node}: {origin}" for node, origin in origins.items() if upload_name not in origin]
    if wrong:
        raise EnvironmentMismatchError(
            f"these nodes do not import the project's code from this machine's upload "
            f"({upload_name}):\n" + "\n".join(wrong)
            + "\nThe image must not ship another daskfleet; nothing was run.")
    return versions
