"""A small seeded torch model on synthetic data, recorded by the recorder.

    python examples/quickstart.py                 # defaults
    python examples/quickstart.py lr=0.05 epochs=30

The run goes to the embedded store in ./.recorder (no server needed).
"""

import torch
from torch import nn

import recorder


def synthetic_data(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """y = a noisy nonlinear function of x: enough signal to learn, enough noise to overfit."""
    x = torch.randn(n, 8, generator=generator)
    y = torch.sin(x[:, :1] * 2) + 0.5 * x[:, 1:2] * x[:, 2:3]
    return x, y + 0.3 * torch.randn(n, 1, generator=generator)


@recorder.experiment(name="quickstart")
def main(lr: float = 0.02, epochs: int = 20, hidden: int = 64, batch_size: int = 32,
         seed: int = 0) -> dict:
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = synthetic_data(256, generator)
    x_val, y_val = synthetic_data(256, generator)
    model = nn.Sequential(nn.Linear(8, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.MSELoss()

    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x_train), generator=generator)
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            val_loss = loss_fn(model(x_val), y_val).item()
        recorder.log({"train_loss": total / len(x_train), "val_loss": val_loss}, step=epoch)
        print(f"epoch {epoch:3d}  train_loss {total / len(x_train):.4f}  val_loss {val_loss:.4f}")

    run = recorder.current_run()
    print(f"\nrecorded run {run.id}: see it with\n    recorder show {run.id}")
    return {"val_loss": val_loss}


if __name__ == "__main__":
    main()
