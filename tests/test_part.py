"""Spec.part: one block instance compiled as a model of its own, such as a VAE's decoder, which
then generates digits from latent vectors in onnxruntime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from conftest import ROOT

import dslc
from dslc.errors import DslcError
from dslc.ir import check as ir


def test_vae_decoder_onnx_runs_and_matches_the_full_model():
    spec = dslc.load(ROOT / "specs/vae.dl")
    torch.manual_seed(0)
    model = spec.torch_namespace()["create_model"]().eval()
    images = torch.rand(7, 64)
    with torch.no_grad():
        recon, mu, _ = model(images)  # in eval mode z = mu, so recon = decoder(mu)
    decoder = spec.part("decoder1")
    assert [v.name for v in decoder.graph.inputs] == ["z"]
    assert list(decoder.graph.outputs) == ["recon"]
    ir.verify(decoder.graph)
    weights = {
        k.removeprefix("decoder1."): v
        for k, v in model.state_dict().items()
        if k.startswith("decoder1.")
    }
    assert set(weights) == {k for k, _ in decoder.graph.parameters()}
    onnx_model = decoder.onnx_model(weights=weights)
    session = ort.InferenceSession(onnx_model.SerializeToString())
    (out,) = session.run(None, {"z": mu.numpy()})
    np.testing.assert_allclose(out, recon.numpy(), atol=1e-5)
    samples = session.run(None, {"z": np.random.default_rng(0).standard_normal((5, 8), "f4")})
    assert samples[0].shape == (5, 64) and ((samples[0] > 0) & (samples[0] < 1)).all()


def test_part_as_pytorch_loads_the_remapped_weights():
    spec = dslc.load(ROOT / "specs/vae.dl")
    model = spec.torch_module().eval()
    part = spec.part("encoder1").torch_module()
    part.load_state_dict(
        {k.removeprefix("encoder1."): v for k, v in model.state_dict().items() if "encoder1." in k}
    )
    x = torch.rand(3, 64)
    with torch.no_grad():
        _, mu, logvar = model(x)
        part_mu, part_logvar = part(x)
    assert torch.equal(mu, part_mu) and torch.equal(logvar, part_logvar)


def test_unknown_part_names_the_instances():
    with pytest.raises(DslcError) as err:
        dslc.load(ROOT / "specs/vae.dl").part("decoder")
    assert err.value.message == "model Vae has no block instance 'decoder'"
    assert err.value.hint == "block instances: decoder1, encoder1"


def test_cli_compiles_the_decoder_with_the_full_models_weights(tmp_path, capsys):
    from dslc.cli import main

    spec = dslc.load(ROOT / "specs/vae.dl")
    torch.manual_seed(0)
    model = spec.torch_module().eval()
    torch.save(model.state_dict(), tmp_path / "vae.pt")
    out = tmp_path / "decoder.onnx"
    args = ["compile", "specs/vae.dl", "--target", "onnx", "--part", "decoder1"]
    assert main([*args, "--weights", str(tmp_path / "vae.pt"), "-o", str(out)]) == 0
    z = np.random.default_rng(1).standard_normal((4, 8)).astype(np.float32)
    (got,) = ort.InferenceSession(str(out)).run(None, {"z": z})
    with torch.no_grad():
        expected = model.decoder1.fc2(torch.relu(model.decoder1.fc1(torch.from_numpy(z))))
    np.testing.assert_allclose(got, torch.sigmoid(expected).numpy(), atol=1e-5)
    assert main([*args[:-1], "decoder9", "-o", str(out)]) == 1
    assert "no block instance 'decoder9'" in capsys.readouterr().err
