"""Test-wide settings (DDS on loopback only, the large-data Fast DDS profile, a ROS domain of this test
session's own), the clean-up that leaves nothing behind, and the shared fixtures."""

import os
import shutil
import tempfile

import pytest
import torch
from helpers import TINY

from dares_core.data.synthetic import SynthConfig, generate, sequence_folder
from dares_core.model.depth_net import DaresDepthNet, DepthNetConfig
from dares_core.model.weights import save_depth_net
from dares_ros.graph import prepare_dds

prepare_dds(local_only=True)
os.environ.setdefault("ROS_DOMAIN_ID", str(1 + os.getpid() % 100))


SESSION_PREFIX = "session-"  # tmp_path_factory folders that session fixtures share across test modules


@pytest.fixture(scope="session", autouse=True)
def temp_folder_of_the_session(tmp_path_factory):
    """Every temporary file of the session, of this process and of the nodes and commands it starts, lies under
    pytest's base folder (TMPDIR), which pytest removes after a green run (tmp_path_retention_policy)."""
    tmp = tmp_path_factory.mktemp(f"{SESSION_PREFIX}tmp", numbered=False)
    old = os.environ.get("TMPDIR")
    os.environ["TMPDIR"], tempfile.tempdir = str(tmp), None
    yield tmp
    if old is None:
        os.environ.pop("TMPDIR")
    else:
        os.environ["TMPDIR"] = old
    tempfile.tempdir = None


@pytest.fixture(scope="module", autouse=True)
def remove_module_folders(tmp_path_factory, request):
    """A test module's folders (its fixtures' scenes, bags and checkpoints, its tests' tmp_path) go when the module
    ends, so the suite's disk use never adds up; kept when one of its tests failed, to look at."""
    base = tmp_path_factory.getbasetemp()
    before, failed = set(base.iterdir()), request.session.testsfailed
    yield
    if request.session.testsfailed == failed:
        for folder in set(base.iterdir()) - before:
            if not folder.name.startswith(SESSION_PREFIX):
                shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """(weights, sequence): a randomly initialised tiny DARES network saved as .safetensors, and a 3-frame
    64x48 synthetic keyframe folder (read only: tests write elsewhere)."""
    root = tmp_path_factory.mktemp(f"{SESSION_PREFIX}tiny")
    torch.manual_seed(0)
    weights = root / "tiny.safetensors"
    save_depth_net(DaresDepthNet(DepthNetConfig.dares("tiny", hf_config=TINY)), weights)
    scenes = generate(SynthConfig(width=64, height=48, frames=3, sequences=1), root / "scenes")
    return weights, scenes / sequence_folder(0)
