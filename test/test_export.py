"""`dares export`: ONNX and torch.export artifacts reproduce the PyTorch network; merged safetensors load."""

import numpy as np
import onnx
import onnxruntime
import pytest
import torch

from dares_core.cli import main
from dares_core.model.weights import load_depth_net


def reference(weights, images):
    net = load_depth_net(weights)
    with torch.no_grad():
        return net(images)[0].numpy()


def test_onnx_matches_pytorch(tiny_model, tmp_path, capsys):
    weights, _ = tiny_model
    out = tmp_path / "depth.onnx"
    assert main(["export", "--weights", str(weights), "--out", str(out), "--height", "56", "--width", "70"]) == 0
    assert "onnxruntime max |diff|" in capsys.readouterr().out
    session = onnxruntime.InferenceSession(str(out))
    for batch in (1, 3):
        images = torch.rand(batch, 3, 56, 70)
        got = session.run(None, {"images": images.numpy()})[0]
        np.testing.assert_allclose(got, reference(weights, images), atol=1e-5)
    model = onnx.load(str(out))
    dims = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in (*model.graph.input, *model.graph.output)}
    assert dims == {"images": ["batch", 3, 56, 70], "disparity": ["batch", 1, 56, 70]}
    assert main(["export", "--weights", str(weights), "--out", str(out)]) == 2  # exists, no --force


@pytest.mark.parametrize("fmt", ["pt2", "safetensors"])
def test_pt2_and_merged_safetensors(tiny_model, tmp_path, fmt):
    weights, _ = tiny_model
    out = tmp_path / f"depth.{fmt}"
    assert main(["export", "--weights", str(weights), "--format", fmt, "--out", str(out), "--height", "56",
                 "--width", "70"]) == 0
    for batch in (1, 3):  # (B,3,H,W) with any batch
        images = torch.rand(batch, 3, 56, 70)
        if fmt == "pt2":
            got = torch.export.load(str(out)).module()(images).detach().numpy()
        else:
            net = load_depth_net(out)
            assert net.config.merged
            with torch.no_grad():
                got = net(images)[0].numpy()
        np.testing.assert_allclose(got, reference(weights, images), atol=1e-5)
