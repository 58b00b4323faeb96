"""Cluster files: a bad file gets one message that names the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.cli import main
from runner.config import load_cluster
from runner.errors import ConfigError


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(text)
    return path


def test_the_shipped_lab_cluster_file_is_valid():
    spec = load_cluster(Path(__file__).parents[2] / "clusters" / "lab.yaml")
    assert spec.provider == "lab" and spec.tls is True and spec.lab.hosts == 3


def test_unknown_key_is_named_with_the_allowed_ones(tmp_path):
    path = write(tmp_path, "name: x\nprovider: lab\ndask:\n  threads_per_workr: 2\n")
    with pytest.raises(ConfigError) as e:
        load_cluster(path)
    msg = str(e.value)
    assert str(path) in msg and "dask.threads_per_workr: unknown key" in msg
    assert "threads_per_worker" in msg  # the allowed keys are listed


def test_wrong_type_names_key_and_value(tmp_path):
    path = write(tmp_path, "name: x\nprovider: lab\ndask: {threads_per_worker: two}\n")
    with pytest.raises(ConfigError, match=r"dask\.threads_per_worker: .*'two'"):
        load_cluster(path)


def test_unknown_provider_and_missing_name(tmp_path):
    with pytest.raises(ConfigError) as e:
        load_cluster(write(tmp_path, "provider: digitalocean\n"))
    assert "name: required key is missing" in str(e.value)
    assert "provider:" in str(e.value) and "digitalocean" in str(e.value)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="cluster file not found"):
        load_cluster(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_cluster(write(tmp_path, "name: [unclosed\n"))


def test_hosts_provider_needs_one_scheduler_and_existing_key_files(tmp_path):
    key = tmp_path / "id"
    key.write_text("k")
    text = ("name: x\nprovider: hosts\nssh: {private_key: %s, known_hosts: %s}\nhosts:\n"
            "  - {name: a, address: 10.0.0.1, role: worker}\n")
    with pytest.raises(ConfigError, match="exactly one role: scheduler"):
        load_cluster(write(tmp_path, text % (key, key)))
    text2 = text.replace("role: worker}", "role: scheduler}\n  - {name: b, address: 10.0.0.2, "
                         "role: worker}")
    with pytest.raises(ConfigError, match=r"ssh\.known_hosts: file not found"):
        load_cluster(write(tmp_path, text2 % (key, tmp_path / "missing")))
    known = tmp_path / "known_hosts"
    known.write_text("".join(f"10.0.0.{i} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoq"
                             "KLsabgH5C9okWi0dh2l9GKJl\n" for i in (1, 2)))
    spec = load_cluster(write(tmp_path, text2 % (key, known)))
    assert [h.role for h in spec.hosts] == ["scheduler", "worker"]


def test_duplicate_host_names_are_refused(tmp_path):
    key = tmp_path / "id"
    key.write_text("k")
    text = (f"name: x\nprovider: hosts\nssh: {{private_key: {key}, known_hosts: {key}}}\nhosts:\n"
            "  - {name: a, address: 10.0.0.1, role: scheduler}\n"
            "  - {name: a, address: 10.0.0.2, role: worker}\n")
    with pytest.raises(ConfigError, match="repeated: a"):
        load_cluster(write(tmp_path, text))


def test_cli_turns_a_bad_file_into_exit_2_and_one_message(tmp_path, capsys):
    path = write(tmp_path, "name: x\nprovider: lab\nbogus: 1\n")
    assert main(["status", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("daskfleet: error:") and "bogus: unknown key" in err
    assert "Traceback" not in err


def test_the_same_cluster_file_finds_the_same_state_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.delenv("DASKFLEET_STATE_DIR", raising=False)
    monkeypatch.delenv("DASKFLEET_INVENTORY_DIR", raising=False)
    (tmp_path / "proj" / "clusters").mkdir(parents=True)
    path = tmp_path / "proj" / "clusters" / "c.yaml"
    path.write_text("name: c1\nprovider: lab\n")
    seen = set()
    for cwd in (tmp_path, tmp_path / "proj", tmp_path / "proj" / "clusters"):
        monkeypatch.chdir(cwd)
        spec = load_cluster(path.relative_to(cwd) if cwd != tmp_path else path)
        seen.add((spec.state_dir, spec.inventory_path))
    assert seen == {(tmp_path / "proj" / ".daskfleet" / "c1",
                     tmp_path / "proj" / "inventory" / "c1" / "hosts.yml")}
    # A file outside a clusters/ folder keeps its state next to it.
    other = tmp_path / "elsewhere.yaml"
    other.write_text("name: c2\nprovider: lab\n")
    assert load_cluster(other).state_dir == tmp_path / ".daskfleet" / "c2"


def test_results_in_a_cluster_file_is_checked_as_a_job_files(tmp_path):
    ok = load_cluster(write(tmp_path, "name: x\nprovider: lab\nresults: {path: 's3://team/runs/'}\n"))
    assert ok.results.path_url == "s3://team/runs"
    path = write(tmp_path, "name: x\nprovider: lab\nresults: {path: /shared/runs}\n")
    with pytest.raises(ConfigError) as e:
        load_cluster(path)
    assert str(path) in str(e.value) and "results.path: '/shared/runs'" in str(e.value)
    assert "file:///shared/folder" in str(e.value)  # what to write instead
