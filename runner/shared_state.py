"""A cluster's state in an object store, for a team: `state: {url: s3://bucket/prefix}` in the
cluster file.

What lives under ``<url>/<cluster>/``:
- ``terraform.tfstate``: Terraform's S3 backend, with its own lock file (``use_lockfile``);
- ``state.json``: daskfleet's record of the cluster (hosts, scheduler, processes), in the clear;
- ``secrets.enc``: the CA (its key), the certificates, the host keys daskfleet generated and the
  known_hosts, as one tar encrypted on this machine with a passphrase the team shares out of
  band (``state.passphrase_env`` names the variable that holds it). A reader of the bucket, who
  may only have needed the corpora in it, gets nothing that lets it talk to the cluster;
- ``lock``: who runs a command that changes the cluster (up, scale, down, rotate), written only
  if absent (S3's conditional write), so two operators' commands run one after the other.

Each machine keeps a copy in its own ``.daskfleet/<cluster>/``: read-only commands refresh it,
commands that change the cluster refresh it once they hold the lock and write it back before
they let go.
"""

from __future__ import annotations

import base64
import getpass
import io
import json
import logging
import os
import shlex
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from runner.errors import ConfigError, DaskfleetError, StateError
from runner.log import Progress, Say

logger = logging.getLogger(__name__)

# What is shared besides state.json, relative to the state folder; all of it encrypted.
SECRET_PATHS = ("tls", "host_keys", "known_hosts", "key_pair_suffix")
MAGIC = b"DFS1"
POLL_S = 2.0
# Marks a state folder that has taken its copy from the store (its own CA, if it had one
# before, was moved aside once, not silently replaced on every refresh).
MARKER = ".shared-state"


class SharedState:
    def __init__(self, url: str, cluster: str, storage_options: dict | None = None,
                 passphrase_env: str = "DASKFLEET_STATE_PASSPHRASE", source=None):
        parts = urllib.parse.urlsplit(url)
        self.url = url
        self.bucket = parts.netloc
        self.prefix = "/".join(p for p in (parts.path.strip("/"), cluster) if p)
        self.options = dict(storage_options or {})
        self.passphrase_env = passphrase_env
        self.source = source  # the cluster file, for messages
        self._s3 = None

    @classmethod
    def for_spec(cls, spec) -> SharedState | None:
        s = spec.state
        if s is None:
            return None
        return cls(s.url, spec.name, s.storage_options, s.passphrase_env, spec.source)

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}/"

    # -- the store ----------------------------------------------------------------------------
    @property
    def region(self) -> str:
        return str(self.options.get("region") or os.environ.get("AWS_REGION")
                   or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1")

    def _client(self) -> Any:  # a boto3 S3 client (boto3 is untyped)
        if self._s3 is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError:
                raise ConfigError(f"{self.source}: state.url needs boto3 on this machine; "
                                  "install it (`pip install 'daskfleet[state]'`).") from None
            o = self.options
            kwargs: dict = {"region_name": self.region, "config": Config(
                connect_timeout=float(o.get("connect_timeout", 10)),
                read_timeout=float(o.get("request_timeout", 60)),
                retries={"max_attempts": 3, "mode": "standard"})}
            if o.get("endpoint_url"):
                kwargs["endpoint_url"] = str(o["endpoint_url"])
            if o.get("key"):
                kwargs.update(aws_access_key_id=str(o["key"]),
                              aws_secret_access_key=str(o.get("secret") or ""))
                if o.get("token"):
                    kwargs["aws_session_token"] = str(o["token"])
            self._s3 = boto3.client("s3", **kwargs)
        return self._s3

    def _explain(self, e: BaseException, verb: str) -> DaskfleetError:
        """A store error as what to check, naming the cluster file's keys."""
        code = getattr(e, "response", {}).get("Error", {}).get("Code", "") if hasattr(
            e, "response") else ""
        name = type(e).__name__
        endpoint = self.options.get("endpoint_url") or "AWS's S3 endpoint"
        if code in ("NoSuchBucket",) or "NoSuchBucket" in str(e):
            what = (f"bucket {self.bucket!r} does not exist (at {endpoint}); create it (with "
                    "versioning on, as for any Terraform state) or fix state.url")
        elif code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied",
                      "ExpiredToken", "403") or name == "NoCredentialsError":
            what = ("the store refused this machine's credentials (or found none); check "
                    "state.storage_options.key and secret, or the AWS_ACCESS_KEY_ID/"
                    f"AWS_SECRET_ACCESS_KEY or profile in use, and that they may {verb} "
                    f"s3://{self.bucket}/{self.prefix}/")
        elif name in ("EndpointConnectionError", "ConnectTimeoutError", "ConnectionClosedError",
                      "ReadTimeoutError"):
            what = (f"cannot reach the store at {endpoint}; check "
                    "state.storage_options.endpoint_url and this machine's network")
        else:
            what = f"{name}: {str(e)[:300]}"
        return DaskfleetError(f"{self.source}: state.url {self.url}: cannot {verb} the "
                              f"cluster's shared state: {what}.")

    def _get(self, name: str) -> bytes | None:
        s3 = self._client()
        try:
            return s3.get_object(Bucket=self.bucket,
                                             Key=f"{self.prefix}/{name}")["Body"].read()
        except Exception as e:  # noqa: BLE001 - botocore's errors, explained by name
            if getattr(e, "response", {}).get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self._explain(e, "read") from e

    def _put(self, name: str, body: bytes, **extra):
        return self._client().put_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}",
                                         Body=body, ServerSideEncryption="AES256", **extra)

    def _delete(self, name: str) -> None:
        self._client().delete_object(Bucket=self.bucket, Key=f"{self.prefix}/{name}")

    def has_terraform_state(self) -> bool:
        return self._get("terraform.tfstate") is not None

    def terraform_backend(self) -> dict:
        """Terraform's S3 backend, on the same store and prefix, with S3's own lock file."""
        b: dict = {"bucket": self.bucket, "key": f"{self.prefix}/terraform.tfstate",
                   "region": self.region, "encrypt": True, "use_lockfile": True}
        o = self.options
        if o.get("endpoint_url"):
            # an S3-compatible store: no STS, no instance metadata to ask, any region name
            b.update(endpoints={"s3": str(o["endpoint_url"])}, use_path_style=True,
                     skip_credentials_validation=True, skip_requesting_account_id=True,
                     skip_metadata_api_check=True, skip_region_validation=True)
        if o.get("key"):
            b.update(access_key=str(o["key"]), secret_key=str(o.get("secret") or ""))
            if o.get("token"):
                b["token"] = str(o["token"])
        return b

    # -- the lock -----------------------------------------------------------------------------
    @contextmanager
    def locked(self, what: str, wait: float = 600.0,
               progress: Progress | None = None) -> Iterator[None]:
        """Hold the cluster's lock in the store. A second command, from any machine, waits,
        saying who holds it, and gives up after ``wait`` seconds, naming the holder."""
        say = Say(progress, logger)
        self._client()
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "user": getpass.getuser(),
                  "command": f"{what} ({shlex.join(sys.argv[1:]) or '-'})",
                  "since": datetime.now(UTC).isoformat(timespec="seconds")}
        deadline = time.monotonic() + wait
        told = False
        while True:
            try:
                self._put("lock", json.dumps(holder).encode(), IfNoneMatch="*")
                break
            except Exception as e:  # noqa: BLE001 - PreconditionFailed: someone holds it
                if getattr(e, "response", {}).get("Error", {}).get("Code") not in (
                        "PreconditionFailed", "ConditionalRequestConflict", "412"):
                    raise self._explain(e, "lock") from e
            current = self._holder()
            if current is None:
                continue  # let go meanwhile
            if self._dead_here(current):
                say(f"removing the cluster's lock left by {_who(current)}: that process is "
                    "gone")
                self._delete("lock")
                continue
            if time.monotonic() > deadline:
                raise DaskfleetError(
                    f"{self.where}lock: {_who(current)} still holds the cluster's lock after "
                    f"{wait:.0f}s; wait for it to finish and run `{what}` again. If that "
                    "command is gone (its machine crashed), remove the lock with `daskfleet "
                    f"unlock -c {self.source}`.")
            if not told:
                say(f"waiting: {_who(current)} holds the cluster's lock ({self.where}lock)")
                told = True
            time.sleep(POLL_S)
        try:
            yield
        finally:
            try:
                self._delete("lock")
            except Exception as e:  # noqa: BLE001 - say it; the command's outcome stands
                say.warning(f"WARNING: could not remove the cluster's lock {self.where}lock "
                            f"({e}); run `daskfleet unlock -c {self.source}`")

    def _holder(self) -> dict | None:
        body = self._get("lock")
        if body is None:
            return None
        try:
            return json.loads(body)
        except ValueError:
            return {"command": body.decode(errors="replace")[:200]}

    @staticmethod
    def _dead_here(h: dict) -> bool:
        # Only a holder of this machine can be seen to be gone (another machine's may be alive).
        if h.get("host") != socket.gethostname() or not isinstance(h.get("pid"), int):
            return False
        try:
            os.kill(h["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False

    def unlock(self) -> dict | None:
        """Remove the lock whoever holds it; returns who held it."""
        current = self._holder()
        if current is not None:
            self._delete("lock")
        return current

    # -- the copy here ------------------------------------------------------------------------
    def _key(self, salt: bytes) -> bytes:
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

        secret = os.environ.get(self.passphrase_env)
        if not secret:
            raise ConfigError(
                f"{self.source}: state.url keeps the cluster's CA in the store, encrypted with "
                f"the passphrase in ${self.passphrase_env}, which is not set here. Set it to the "
                "team's passphrase (from where your team keeps secrets) and run the command "
                f"again; a new cluster's first `up` sets it (state.passphrase_env names another "
                "variable).")
        raw = Scrypt(salt=salt, length=32, n=2**15, r=8, p=1).derive(secret.encode())
        return base64.urlsafe_b64encode(raw)

    def _seal(self, data: bytes) -> bytes:
        from cryptography.fernet import Fernet

        salt = os.urandom(16)
        return MAGIC + salt + Fernet(self._key(salt)).encrypt(data)

    def _open(self, blob: bytes) -> bytes:
        from cryptography.fernet import Fernet, InvalidToken

        if not blob.startswith(MAGIC):
            raise StateError(f"{self.where}secrets.enc is not a daskfleet secrets file; restore "
                             "it from the bucket's versions.", path=Path("secrets.enc"))
        salt, token = blob[4:20], blob[20:]
        try:
            return Fernet(self._key(salt)).decrypt(token)
        except InvalidToken:
            raise ConfigError(
                f"{self.where}secrets.enc: ${self.passphrase_env} is not the passphrase it was "
                "encrypted with; set the team's passphrase and run the command again.") from None

    def pull(self, state_dir: Path, progress: Progress | None = None) -> bool:
        """Refresh this machine's copy from the store (nothing there yet: the copy is kept, and
        the next command that changes the cluster writes it). Returns whether the store had it."""
        record = self._get("state.json")
        secrets = self._get("secrets.enc")
        state_dir.mkdir(parents=True, exist_ok=True)
        first = not (state_dir / MARKER).exists()
        if record is not None:
            json.loads(record)  # never replace a good copy with a damaged one
            _write_atomic(state_dir / "state.json", record)
        if secrets is not None:
            self._unpack(self._open(secrets), state_dir, first, progress)
        if record is not None or secrets is not None:
            (state_dir / MARKER).write_text(self.where + "\n")
        return record is not None

    def _unpack(self, data: bytes, state_dir: Path, first: bool,
                progress: Progress | None) -> None:
        with tempfile.TemporaryDirectory(dir=state_dir, prefix=".pull.") as tmp:
            with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
                tar.extractall(tmp, filter="data")
            for name in SECRET_PATHS:
                new, old = Path(tmp) / name, state_dir / name
                if first and old.exists() and _differs(old, new):
                    aside = state_dir / f"{name}.before-shared"
                    shutil.rmtree(aside, ignore_errors=True) if aside.is_dir() else \
                        aside.unlink(missing_ok=True)
                    os.replace(old, aside)
                    Say(progress, logger)(f"this machine's own {name} differs from the shared "
                                          f"one: kept as {aside}, the shared one is used")
                if not new.exists():
                    continue
                if old.is_dir():
                    shutil.rmtree(old)
                elif old.exists():
                    old.unlink()
                os.replace(new, old)

    def push(self, state_dir: Path) -> None:
        """Write this machine's copy to the store: state.json, and the secrets sealed."""
        try:
            record = (state_dir / "state.json").read_bytes()
        except FileNotFoundError:
            record = None
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name in SECRET_PATHS:
                if (state_dir / name).exists():
                    tar.add(state_dir / name, arcname=name)
        try:
            self._put("secrets.enc", self._seal(buf.getvalue()))
            if record is not None:
                self._put("state.json", record)
        except DaskfleetError:
            raise
        except Exception as e:  # noqa: BLE001 - botocore's errors, explained by name
            raise self._explain(e, "write") from e
        (state_dir / MARKER).write_text(self.where + "\n")


def _who(h: dict) -> str:
    return (f"{h.get('user', '?')}@{h.get('host', '?')} (pid {h.get('pid', '?')}, "
            f"`{h.get('command', '?')}`, since {h.get('since', '?')})")


def _differs(a: Path, b: Path) -> bool:
    if not b.exists():
        return False
    if a.is_dir() != b.is_dir():
        return True
    if a.is_file():
        return a.read_bytes() != b.read_bytes()
    files = lambda p: {q.relative_to(p): q.read_bytes() for q in p.rglob("*") if q.is_file()}  # noqa: E731
    return files(a) != files(b)


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
