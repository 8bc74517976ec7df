"""What the PyTorch fixture generators share (imported by make_*_fixture.py from this folder)."""
import torch
import torch.nn.functional as F


def step_losses(model, opt, x, y, vocab, steps):
    """The loss of (x, y) before each of `steps` optimizer steps on it."""
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        l = F.cross_entropy(model(x).logits.reshape(-1, vocab), y.reshape(-1))
        losses.append(l.item())
        l.backward()
        opt.step()
    return losses


def perturb_vectors(model):
    """Moves every 1-D parameter (HF's init leaves norm weights at 1 and biases at 0) by
    0.1·N(0, 1), so that a test sees each of them in the forward pass."""
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.add_(0.1 * torch.randn_like(p))
