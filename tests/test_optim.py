"""r2kd.optim.SGD must match torch.optim.SGD bit for bit, including across a state save/load."""

import torch

from r2kd.optim import SGD


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def _steps(model, optimizer, n, start=0):
    for i in range(start, start + n):
        g = torch.Generator().manual_seed(i)
        x, y = torch.randn(8, 6, generator=g), torch.randint(0, 3, (8,), generator=g)
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


def test_matches_torch_sgd_exactly():
    for foreach in (False, True):
        ours, ref = _model(0), _model(0)
        _steps(ours, SGD(ours.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4), 7)
        _steps(ref, torch.optim.SGD(ref.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4, foreach=foreach), 7)
        for a, b in zip(ours.parameters(), ref.parameters()):
            assert torch.equal(a, b)


def test_state_round_trip_continues_identically():
    straight = _model(1)
    opt = SGD(straight.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    _steps(straight, opt, 6)

    resumed = _model(1)
    first = SGD(resumed.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    _steps(resumed, first, 3)
    state = first.state_dict()
    second = SGD(resumed.parameters(), lr=0.0, momentum=0.9, weight_decay=1e-3)
    second.load_state_dict(state)
    assert second.lr == 0.05
    _steps(resumed, second, 3, start=3)
    for a, b in zip(straight.parameters(), resumed.parameters()):
        assert torch.equal(a, b)


def test_no_momentum_no_decay_is_plain_gradient_descent():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    p.grad = torch.tensor([0.5, 0.25])
    SGD([p], lr=0.1).step()
    assert torch.allclose(p.detach(), torch.tensor([0.95, -2.025]))
