"""What the emulated EC2's instance image has besides Debian: a `docker` stand-in.

There is no internet here, so no image can be pulled. The stand-in implements `docker run` as
dask-cloudprovider's user data uses it (`docker run --net=host -e K=V ... IMAGE COMMAND...`):
options are honoured where they mean something on a host (`-e`/`--env`; `--net=host` is what
the host's network is anyway), the image name is logged and otherwise ignored, and COMMAND runs
on the host, as root (as in the container), in the "image's" environment: a venv the lab builds
from this machine's lock (the same pins every node gets, without the project itself, which a
public image lacks too), with the host's own Python. The image's entry point is emulated for
EXTRA_PIP_PACKAGES: pins the environment already satisfies are reported; others cannot be
installed offline and are reported as such (the client's version check then refuses the cluster).

Before it runs, `docker run` pulls the image from the lab's registry, on the lab's internet
(REGISTRY, served by the instance controller: `serve_registry`), as Docker pulls it from its
registry: an instance with no way out (no public address through an internet gateway, no NAT
gateway) cannot pull, and `docker run` fails as Docker's does, after its dial timeout. The
registry logs each pull with the address it came from (cloud/registry.log).

So the emulator proves orchestration (user data, addresses, security groups, TLS, teardown), not
the image. `shutdown`, `poweroff` and `reboot` are systemd's own (the host's PID 1): scheduled
by its logind (`shutdown -P +MINUTES`: an ephemeral run's hard stop; `-c` cancels), they take
the host down, and its power unit leaves a marker (runner.lab.boot_scripts.shutdown_requested)
that the controller acts on as EC2 does: a power-off stops or terminates the instance, as its
InstanceInitiatedShutdownBehavior says; a reboot boots it again.
"""

from __future__ import annotations

import hashlib
import http.server
import logging
import os
import shlex
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

from runner.errors import LabError
from runner.lab.addresses import INTERNET_ADDRESS
from runner.log import Progress, Say

logger = logging.getLogger(__name__)

# Inside an instance host (private per host: runner.lab.instances adds them to the boot spec).
BIN_DIRS = ("usr/local/bin", "usr/local/sbin")
REGISTRY = f"{INTERNET_ADDRESS}:5000"  # the lab's image registry, on its internet
PULL_TIMEOUT_S = 30  # Docker's dial timeout: a registry it cannot reach fails the pull then

DOCKER = r'''#!/usr/bin/python3
"""docker stand-in of the daskfleet lab (see runner/lab/standin.py): `docker run` runs the
container's command on this host in the lab's image environment. Not Docker."""
import os, subprocess, sys, time, urllib.parse, urllib.request

IMAGE_ENV = @IMAGE_ENV@
REGISTRY = @REGISTRY@
PULL_TIMEOUT_S = @PULL_TIMEOUT_S@
WITH_VALUE = {"-e", "--env", "-v", "--volume", "--name", "-p", "--publish", "--network", "--net",
              "--gpus", "-w", "--workdir", "--entrypoint", "-u", "--user", "--env-file",
              "--restart", "--log-driver", "-m", "--memory", "--shm-size", "--mount"}


def say(msg):
    print(f"docker (lab stand-in): {msg}", file=sys.stderr, flush=True)


def pull(image):
    url = f"http://{REGISTRY}/pull?image={urllib.parse.quote(image)}"
    deadline = time.monotonic() + PULL_TIMEOUT_S
    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                r.read()
            say(f"image {image}: pulled from the lab's registry {REGISTRY}")
            return True
        except OSError as e:
            if time.monotonic() > deadline:
                print(f"Unable to find image '{image}' locally", file=sys.stderr)
                print(f"docker: Error response from daemon: Get \"http://{REGISTRY}/v2/\": "
                      f"dial tcp {REGISTRY}: i/o timeout ({e}).", file=sys.stderr, flush=True)
                return False
            time.sleep(1)


def main(argv):
    if not argv or argv[0] in ("-v", "--version", "version"):
        print("Docker version 0.0.0-daskfleet-lab-stand-in")
        return 0
    if argv[0] in ("pull", "info", "ps", "images"):
        say(f"`docker {argv[0]}`: nothing to do (no daemon, no registry)")
        return 0
    if argv[0] != "run":
        say(f"`docker {argv[0]}` is not implemented (only run)")
        return 125
    env, i, args = {}, 1, argv
    while i < len(args) and args[i].startswith("-"):
        opt, _, val = args[i].partition("=")
        if opt in WITH_VALUE and not val:
            i += 1
            val = args[i] if i < len(args) else ""
        if opt in ("-e", "--env"):
            k, eq, v = val.partition("=")
            env[k] = v if eq else os.environ.get(k, "")
        elif opt in ("--net", "--network") and val != "host":
            say(f"{opt}={val}: this host's network is used (as --net=host)")
        elif opt in ("-d", "--detach"):
            say("-d: not supported; running in the foreground")
        elif opt not in ("--rm", "-i", "-t", "-it", "--init", "--net", "--network"):
            say(f"ignored option {args[i]}")
        i += 1
    if i >= len(args):
        say("no image given")
        return 125
    image, command = args[i], args[i + 1:]
    if not pull(image):
        return 125
    say(f"image {image}: running its command in the lab's environment {IMAGE_ENV}")
    pins = env.get("EXTRA_PIP_PACKAGES", "").split()
    if pins:
        check = ("import importlib.metadata as m, sys\n"
                 "bad = []\n"
                 "for p in sys.argv[1:]:\n"
                 "    n, _, v = p.partition('==')\n"
                 "    try: have = m.version(n)\n"
                 "    except m.PackageNotFoundError: have = None\n"
                 "    if have != v: bad.append(f'{p} (image has {have})')\n"
                 "print('\\n'.join(bad))\n")
        out = subprocess.run([f"{IMAGE_ENV}/bin/python", "-c", check, *pins],
                             capture_output=True, text=True).stdout.split("\n")
        bad = [b for b in out if b]
        if bad:
            say("EXTRA_PIP_PACKAGES: cannot install offline: " + "; ".join(bad))
        else:
            say(f"EXTRA_PIP_PACKAGES: all {len(pins)} pins already satisfied by the image")
    if not command:
        say("no command given (the image's default command is not emulated)")
        return 125
    base = {"PATH": f"{IMAGE_ENV}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/root",
            "LANG": "C.UTF-8", "HOSTNAME": os.uname().nodename}
    sys.stdout.flush()
    os.execvpe(command[0], command, {**base, **env})


sys.exit(main(sys.argv[1:]))
'''

def install(hdir: Path, image_env: Path, registry: str = REGISTRY,
            pull_timeout_s: float = PULL_TIMEOUT_S) -> None:
    """Write the docker stand-in into an instance host's private /usr/local (before it boots)."""
    bin_dir, sbin_dir = (hdir / "fs" / d for d in BIN_DIRS)
    bin_dir.mkdir(parents=True, exist_ok=True)
    sbin_dir.mkdir(parents=True, exist_ok=True)
    docker = bin_dir / "docker"
    docker.write_text(DOCKER.replace("@IMAGE_ENV@", repr(str(image_env)))
                      .replace("@REGISTRY@", repr(registry))
                      .replace("@PULL_TIMEOUT_S@", str(pull_timeout_s)))
    docker.chmod(0o755)


def image_env_path(images_dir: Path) -> Path:
    """Where the image environment of this machine's lock lives (named by its pins only: a
    change of the project's code, which the image does not hold, keeps it)."""
    from runner.provision.lock import derive_lock

    lock = derive_lock()
    key = hashlib.sha256("\n".join(f"{n}=={v}" for n, v in lock.pins).encode()
                         + lock.python.encode()).hexdigest()[:16]
    return images_dir / key


def build_image_env(images_dir: Path, progress: Progress | None = None) -> Path:
    """The lock's third-party pins installed offline (hash-checked, from the project's wheelhouse)
    into a venv of the host's Python, once per set of pins. The project itself is left out."""
    from runner.provision import wheelhouse
    from runner.provision.lock import derive_lock

    dest = image_env_path(images_dir)
    if (dest / ".complete").exists():
        return dest
    t0 = time.monotonic()
    house = wheelhouse.build(derive_lock(), progress=progress)
    # Built in place (a venv's scripts name its own path); `.complete` is written last, so a
    # half-built one is rebuilt. Only the instance controller builds it, one boot at a time.
    subprocess.run(["rm", "-rf", str(dest)], check=False)
    dest.parent.mkdir(parents=True, exist_ok=True)
    uv = str(house.dir / "uv")
    steps = [
        [uv, "venv", "--quiet", "--python", "/usr/bin/python3", str(dest)],
        [uv, "pip", "install", "--quiet", "--offline", "--no-index", "--no-deps", "--require-hashes",
         "--find-links", str(house.dir / "wheels"), "--python", str(dest / "bin" / "python"),
         "-r", str(house.dir / "lock.txt")],
    ]
    for args in steps:
        proc = subprocess.run(args, capture_output=True, text=True,
                              env={**os.environ, "UV_NO_CONFIG": "1"})
        if proc.returncode != 0:
            raise LabError(f"lab: building the docker stand-in's environment failed: "
                           f"`{shlex.join(args)}`:\n{(proc.stderr or proc.stdout)[-1500:]}")
    (dest / ".complete").write_text(house.lock.hash + "\n")
    Say(progress, logger)(f"docker stand-in environment {dest} built in {time.monotonic() - t0:.1f}s")
    return dest


def serve_registry(log_path: Path, address: str = REGISTRY) -> http.server.ThreadingHTTPServer:
    """The lab's image registry at ``address`` (a thread of the caller's): every image is
    there; each pull is logged as `time address image` in ``log_path``."""
    lock = threading.Lock()

    class Pull(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            image = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).get("image")
            if not image:
                self.send_error(404)
                return
            with lock, open(log_path, "a") as log:
                log.write(f"{time.strftime('%H:%M:%S')} {self.client_address[0]} {image[0]}\n")
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):  # the pull log above is the log
            pass

    host, port = address.rsplit(":", 1)
    server = http.server.ThreadingHTTPServer((host, int(port)), Pull)
    threading.Thread(target=server.serve_forever, daemon=True, name="registry").start()
    return server


def registry_pulls(log_path: Path) -> list[tuple[str, str]]:
    """(address, image) of each pull so far."""
    try:
        rows = log_path.read_text().splitlines()
    except FileNotFoundError:
        return []
    return [(r.split()[1], r.split()[2]) for r in rows if len(r.split()) == 3]
