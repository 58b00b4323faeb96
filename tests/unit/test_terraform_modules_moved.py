"""A project moved, or installed anew in another folder, changes the module source in the
cluster's Terraform root: `up` runs `terraform init` again instead of failing with Terraform's
"Module source has changed". Run with the real terraform on a module of its built-in provider
(no download)."""

from __future__ import annotations

import json
import shutil

from runner.provision import terraform

MODULE = 'resource "terraform_data" "x" {\n  input = "a"\n}\n'


def _root(workdir, source) -> None:
    (workdir / "main.tf.json").write_text(json.dumps({"module": {"cluster": {"source": str(source)}}}))


def test_a_moved_module_source_is_initialised_again(tmp_path):
    first = tmp_path / "project-a" / "modules" / "hosts"
    first.mkdir(parents=True)
    (first / "main.tf").write_text(MODULE)
    work = tmp_path / "work"
    work.mkdir()
    _root(work, first)
    terraform._init(work, None)
    assert not terraform._modules_moved(work)
    moved = tmp_path / "project-b" / "modules" / "hosts"
    shutil.copytree(first, moved)
    _root(work, moved)
    assert terraform._modules_moved(work)
    terraform._init(work, None)  # init again: Terraform would refuse to plan otherwise
    assert not terraform._modules_moved(work)
    out = terraform._tf(work, "plan", "-input=false", "-no-color", what="plan")
    assert "1 to add" in out, out
