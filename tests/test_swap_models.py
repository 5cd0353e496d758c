"""The swap model families: shapes, a real forward/backward pass at each default size, the anti-checkerboard
blocks, and the registry."""
from __future__ import annotations

import io

import pytest
import torch

from deid.models.swap import FAMILIES, build_model, family
from deid.models.swap.blocks import Residual, Upscale
from deid.core.errors import ConfigError


@pytest.fixture(autouse=True)
def _seed():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        yield


@pytest.mark.parametrize("name, size_in, size_out, has_mask", [
    ("original", 64, 64, False),
    ("dfaker", 64, 128, True),
    ("villain", 256, 256, True),
])
def test_family_forward_backward_at_default_size(name, size_in, size_out, has_mask):
    model = build_model(name)
    assert (model.input_size, model.output_size) == (size_in, size_out)
    assert type(model).learns_mask == has_mask
    x = torch.rand(1, 3, size_in, size_in)  # batch 1: the full-size models are slow on a CI CPU
    rgb, mask = model(x, "a")
    assert rgb.shape == (1, 3, size_out, size_out)
    assert (mask is not None) == has_mask
    if has_mask:
        assert mask.shape == (1, 1, size_out, size_out)
        assert 0 <= mask.min() and mask.max() <= 1
    assert 0 <= rgb.min() and rgb.max() <= 1

    target = torch.rand_like(rgb)
    loss = (rgb - target).abs().mean() + (0 if mask is None else mask.mean())
    loss.backward()
    grads = {part: [p.grad for p in getattr(model, part).parameters()]
             for part in ("encoder", "decoder_a", "decoder_b")}
    assert all(g is not None and torch.isfinite(g).all() for g in grads["encoder"] + grads["decoder_a"])
    assert sum(g.abs().sum() for g in grads["encoder"]) > 0
    # Side "a" must not touch decoder B: the two people's decoders are separate networks.
    assert all(g is None for g in grads["decoder_b"])


@pytest.mark.parametrize("name", list(FAMILIES.names()))
def test_sides_use_their_own_decoder(name):
    model = build_model(name, input_size=64, width=16, latent=32)
    x = torch.rand(1, 3, model.input_size, model.input_size)
    with torch.no_grad():
        a, _ = model(x, "a")
        b, _ = model(x, "b")
        again, _ = model(x, "a")
    assert torch.equal(a, again)
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="side"):
        model(x, "c")


@pytest.mark.parametrize("name", list(FAMILIES.names()))
def test_sizes_and_latent_are_configurable_and_frozen_in_arch(name):
    cls = family(name)
    small = build_model(name, input_size=64, output_size=128, width=16, latent=64)
    assert small.arch() == {"model": name, "input_size": 64, "output_size": 128, "width": 16, "latent": 64}
    rgb, _ = small(torch.rand(1, 3, 64, 64), "b")
    assert rgb.shape[-1] == 128
    with torch.device("meta"):  # the default shapes, without allocating 100M parameters
        default = build_model(name)
    assert default.arch()["model"] == name
    assert {k: default.arch()[k] for k in ("input_size", "output_size")} == {"input_size": cls.input_size,
                                                                               "output_size": cls.output_size}
    assert 0.5 <= cls.coverage <= 1.0
    with pytest.raises(ValueError, match="power of two"), torch.device("meta"):
        build_model(name, output_size=96)


def test_unknown_family_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model 'gan'.*original, dfaker, villain"):
        build_model("gan")
    with pytest.raises(ConfigError, match="train.model must be one of original, dfaker, villain; got 'gan'"):
        family("gan", "train.model")


def test_the_registered_name_is_the_name_a_checkpoint_records():
    assert FAMILIES.names()[:3] == ("original", "dfaker", "villain")
    for name in FAMILIES.names():
        assert family(name).name == name  # set by the registration: DFaker does not inherit Original's


@pytest.mark.parametrize("name", list(FAMILIES.names()))
def test_state_dict_is_weights_only_and_carries_the_iteration(name):
    model = build_model(name, input_size=64, width=8, latent=16)
    model.iteration.fill_(1234)
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    assert int(state["iteration"]) == 1234
    fresh = build_model(name, input_size=64, width=8, latent=16)
    fresh.load_state_dict(state)
    x = torch.rand(1, 3, fresh.input_size, fresh.input_size)
    with torch.no_grad():
        assert torch.equal(fresh(x, "b")[0], model(x, "b")[0])


def test_icnr_upscale_starts_without_checkerboard():
    block = Upscale(8, 4)
    out = block(torch.rand(1, 8, 10, 10))
    assert out.shape == (1, 4, 20, 20)
    # ICNR: the four sub-pixels of each output pixel block are equal at initialisation.
    for dy, dx in ((0, 1), (1, 0), (1, 1)):
        assert torch.allclose(out[..., 0::2, 0::2], out[..., dy::2, dx::2])
    # A plain random init of the same layer would not have that property: the test can fail.
    torch.nn.init.kaiming_uniform_(block[0].weight)
    out = block(torch.rand(1, 8, 10, 10))
    assert not torch.allclose(out[..., 0::2, 0::2], out[..., 1::2, 1::2])


@pytest.mark.parametrize("name", list(FAMILIES.names()))
def test_every_convolution_pads_by_reflection(name):
    model = build_model(name, input_size=64, width=8, latent=16)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(c.padding_mode == "reflect" for c in convs if c.padding != (0, 0))
    assert any(isinstance(m, Residual) for m in model.modules()) == (name != "original")
