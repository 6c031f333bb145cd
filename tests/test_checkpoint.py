import numpy as np
import torch

from medfuse.checkpoint import load_checkpoint, save_checkpoint


def test_round_trip_of_model_optimizer_and_rng_state(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(16, 4)).pow(2).mean().backward()
        opt.step()
    rng = np.random.default_rng(3)
    state = {"model": model.state_dict(), "opt": opt.state_dict(), "torch_rng": torch.get_rng_state(),
             "numpy_rng": rng.bit_generator.state, "epoch": 3, "history": [{"loss": 0.5}]}
    save_checkpoint(tmp_path / "ck.safetensors", state)
    back = load_checkpoint(tmp_path / "ck.safetensors")

    assert back["epoch"] == 3 and back["history"] == [{"loss": 0.5}]
    model2 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    model2.load_state_dict(back["model"])
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    opt2.load_state_dict(back["opt"])
    # the same next step from the restored state as from the original one
    x = torch.randn(16, 4)
    torch.set_rng_state(back["torch_rng"])
    for m, o in ((model, opt), (model2, opt2)):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    rng2 = np.random.default_rng()
    rng2.bit_generator.state = back["numpy_rng"]
    assert rng2.integers(1 << 30) == rng.integers(1 << 30)
    assert not list(tmp_path.glob(".ck.safetensors.*"))  # no temporary file left behind
