"""The training image's Dockerfile: pinned, multi-stage, non-root, locked, read-only friendly.

No image is built here (no container engine on CI); the Dockerfile's promises are checked where
they can be: its instructions, its lock files against TensorFlow's own requirements, its build
context, and, for the read-only root filesystem, the CLI itself run with the image's environment
in a mount namespace where only /tmp is writable.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dockerfile import DOCKERIGNORE, entrypoint, final, final_env, from_images, instructions, pairs
from manifests import REPO
from packaging.requirements import Requirement

OCI_LABELS = {
    "org.opencontainers.image.title",
    "org.opencontainers.image.description",
    "org.opencontainers.image.version",
    "org.opencontainers.image.revision",
    "org.opencontainers.image.created",
    "org.opencontainers.image.licenses",
    "org.opencontainers.image.base.name",
}


def lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = re.match(r"^([A-Za-z0-9_.\-]+)==(\S+)", line)
        if match:
            pins[match[1].lower().replace("_", "-")] = match[2]
    return pins


def makefile_variable(name: str) -> str:
    text = (REPO / "Makefile").read_text(encoding="utf-8")
    (value,) = re.findall(rf"^{name}\s*:?=\s*(\S+)", text, flags=re.MULTILINE)
    return value


def test_it_is_multi_stage_on_one_pinned_python_matching_the_lock() -> None:
    images = from_images()
    assert len(images) >= 3  # the pinned base, the build stage, the runtime stage
    (base,) = [image for image in images if ":" in image]
    # The exact interpreter requirements.lock was compiled for (make lock --python-version).
    locked_python = re.search(r"--python-version (\d+\.\d+)", (REPO / "Makefile").read_text())[1]
    assert re.fullmatch(rf"python:{re.escape(locked_python)}\.\d+-slim-[a-z]+", base), base
    assert pairs("LABEL")["org.opencontainers.image.base.name"].endswith(f"/{base}")


def test_the_runtime_stage_runs_the_cli_as_a_fixed_non_root_user() -> None:
    (user,) = final("USER")
    uid, gid = (int(part) for part in user.split(":"))
    assert uid >= 10000 and gid >= 10000
    assert any(f"--uid {uid}" in run for run in final("RUN"))
    assert entrypoint() == ["plateau-lstm"]
    assert final("HEALTHCHECK") == ["NONE"]  # a batch command: nothing to health-check


def test_it_carries_the_oci_labels() -> None:
    labels = pairs("LABEL")
    assert set(labels) >= OCI_LABELS
    with (REPO / "pyproject.toml").open("rb") as handle:
        project = tomllib.load(handle)["project"]
    assert labels["org.opencontainers.image.licenses"] == project["license"]
    assert labels["org.opencontainers.image.title"] == project["name"]


def test_it_holds_no_secrets() -> None:
    sensitive = re.compile(r"KEY|SECRET|TOKEN|PASSWORD|CREDENTIAL", re.IGNORECASE)
    for keyword in ("ENV", "ARG"):
        names = set(pairs(keyword))
        assert not [n for n in names if sensitive.search(n)], (keyword, names)
    for copy in [i.arguments for i in instructions() if i.keyword == "COPY"]:
        assert not re.search(r"\.env\b|credentials|\.aws|\.netrc", copy), copy


def test_it_installs_from_the_makefiles_lock_and_the_cuda_lock() -> None:
    (install,) = [
        i.arguments
        for i in instructions()
        if "pip install" in i.arguments and "--constraint" in i.arguments
    ]
    assert "--constraint requirements.lock" in install
    assert "--constraint requirements-cuda.lock" in install
    assert '".[train]"' in install and '"tensorflow[and-cuda]"' in install
    assert pairs("ARG")["UV_VERSION"] == makefile_variable("UV_VERSION")


def test_the_cuda_lock_pins_exactly_tensorflows_cuda_wheels() -> None:
    tensorflow = lock_pins(REPO / "requirements.lock")["tensorflow"]
    assert importlib.metadata.version("tensorflow") == tensorflow
    wanted = [
        Requirement(r)
        for r in importlib.metadata.requires("tensorflow")
        if 'extra == "and-cuda"' in r
    ]
    cuda = lock_pins(REPO / "requirements-cuda.lock")
    assert wanted and set(cuda) == {r.name for r in wanted}
    for requirement in wanted:
        assert requirement.specifier.contains(cuda[requirement.name]), requirement
    main_pins = lock_pins(REPO / "requirements.lock")
    assert not set(cuda) & set(main_pins), "requirements.lock would install CUDA wheels locally"


def test_the_build_context_is_an_allowlist_of_what_the_image_needs() -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for copy in [i.arguments for i in instructions() if i.keyword == "COPY"]:
        if "--from=" in copy:
            continue
        *sources, _destination = copy.split()
        copied.update(source.rstrip("/") for source in sources)
    assert copied == allowed
    for source in copied:
        assert (REPO / source).exists(), source


@pytest.fixture(scope="module")
def read_only_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """prepare + one epoch of train, with the image's environment, as a pod runs them: the root
    filesystem read-only (this checkout and the virtual environment included), /tmp writable."""
    scratch = tmp_path_factory.mktemp("pod-tmp")
    env = {**final_env(), "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"}
    steps = (
        "plateau-lstm prepare --output /tmp/run/prepared && "
        "plateau-lstm train --prepared /tmp/run/prepared --output /tmp/run/model "
        "--epochs 1 --window 16 --lstm-layers 1 --lstm-units 8 --dense-units 8 --verbose 0"
    )
    # A checkout (or virtual environment) that itself lives under /tmp would vanish under the
    # pod's /tmp: it is bound into the new /tmp at its own path, read-only like the rest.
    kept = _under_tmp(REPO, Path(sys.prefix))
    for path in kept:
        (scratch / path.relative_to("/tmp")).mkdir(parents=True, exist_ok=True)
    namespace = " && ".join(
        [
            "mount --make-rprivate /",
            *(f"mount --bind {p} {scratch / p.relative_to('/tmp')}" for p in kept),
            f"mount --rbind {scratch} /tmp",
            "mount -o remount,bind,ro /",
            *(f"mount -o remount,bind,ro /tmp/{p.relative_to('/tmp')}" for p in kept),
            f"cd {final('WORKDIR')[-1]}",
            f"exec sh -c '{steps}'",
        ]
    )
    result = subprocess.run(
        ["unshare", "--mount", "sh", "-c", namespace],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return scratch, result.stderr


def test_the_root_filesystem_really_is_read_only_in_the_run(tmp_path: Path) -> None:
    probe = subprocess.run(
        [
            "unshare",
            "--mount",
            "sh",
            "-c",
            "mount --make-rprivate / && mount -o remount,bind,ro / && "
            f"touch {REPO}/.read-only-probe",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert probe.returncode != 0 and "Read-only file system" in probe.stderr
    assert not (REPO / ".read-only-probe").exists()


def _under_tmp(*paths: Path) -> list[Path]:
    """Those of `paths` inside /tmp, leaving out any inside another."""
    inside = sorted({p.resolve() for p in paths if p.resolve().is_relative_to("/tmp")})
    return [p for p in inside if not any(p != q and p.is_relative_to(q) for q in inside)]


def test_the_cli_trains_with_only_tmp_writable(read_only_run) -> None:
    scratch, stderr = read_only_run
    model = scratch / "run" / "model"
    for name in ("model.keras", "history.csv", "report.png", "train_summary.json"):
        assert (model / name).is_file(), name
    assert "Read-only file system" not in stderr
    assert "is not a writable directory" not in stderr  # matplotlib's fallback warning
    # Caches went where the image's environment sends them.
    env = final_env()
    assert (scratch / Path(env["MPLCONFIGDIR"]).relative_to("/tmp")).is_dir()
    assert os.access(scratch, os.W_OK)
