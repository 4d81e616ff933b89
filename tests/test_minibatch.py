"""lifelong.minibatch.descend: the auxiliary fits' loop equals a hand-written one, step for step."""

import torch

from lifelong.minibatch import descend


def test_descend_equals_a_hand_written_loop_with_per_step_rates_and_per_epoch_hooks():
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(10, 3, generator=g), torch.randint(0, 2, (10,), generator=g)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    orders = [torch.randperm(10, generator=g) for _ in range(3)]
    rates = [0.1 / (1 + s) for s in range(9)]  # 3 epochs x ceil(10 / 4) steps

    opt_a = torch.optim.SGD(a.parameters(), lr=1.0, momentum=0.9)
    step = 0
    for order in orders:
        for s in range(0, 10, 4):
            rows = order[s:s + 4]
            for group in opt_a.param_groups:
                group["lr"] = rates[step]
            opt_a.zero_grad()
            torch.nn.functional.cross_entropy(a(x[rows]), y[rows]).backward()
            opt_a.step()
            step += 1

    after_epoch = []

    def epochs():
        for e, order in enumerate(orders):
            yield order, lambda rows: torch.nn.functional.cross_entropy(b(x[rows]), y[rows])
            after_epoch.append(e)  # runs once the epoch's steps are done

    opt_b = torch.optim.SGD(b.parameters(), lr=1.0, momentum=0.9)
    seen = []
    descend(opt_b, epochs(), 4, rate=lambda s: seen.append(s) or rates[s])
    assert seen == list(range(9)) and after_epoch == [0, 1, 2]
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_descend_trains_under_no_grad():
    w = torch.nn.Parameter(torch.ones(1))
    opt = torch.optim.SGD([w], lr=0.5)
    with torch.no_grad():
        descend(opt, [(torch.arange(2), lambda rows: (w * 2).sum())], 2)
    assert torch.equal(w.detach(), torch.zeros(1))  # one step of 0.5 * d(2w)/dw = 1


def test_descend_clips_the_gradient_norm_before_each_step():
    """clip > 0: the step uses the gradient scaled to l2 norm `clip` (GDumb's --clip 10), below it unchanged."""
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    opt = torch.optim.SGD([w], lr=1.0)
    descend(opt, [(torch.arange(1), lambda rows: 10 * (w * torch.tensor([3.0, 4.0])).sum())], 1, clip=5.0)
    assert torch.allclose(w.detach(), torch.tensor([0.0, 0.0]), atol=1e-5)  # gradient (30, 40): norm 50 -> 5
    descend(opt, [(torch.arange(1), lambda rows: (w * torch.tensor([0.3, 0.4])).sum())], 1, clip=5.0)
    assert torch.allclose(w.detach(), torch.tensor([-0.3, -0.4]), atol=1e-5)  # norm 0.5 < 5: as it is
