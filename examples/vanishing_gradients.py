"""Vanishing gradients in a deep Tanh MLP, recorded by `recorder.watch`.

    python examples/vanishing_gradients.py              # 5 Linear+Tanh layers, a Linear head
    python examples/vanishing_gradients.py depth=2      # shallow: nothing vanishes

With PyTorch's default initialisation each Linear+Tanh layer passes back little more than
half of the gradient it receives (weights of std 1/sqrt(3 fan_in)), so the mean
|grad_output| of the first layer ends up about 25 times below that of the output layer. `recorder.watch` records it per layer
(`grad/<module>/out_mean_abs`) and writes a "vanishing" event for each module more than 10
times below the last one. The run goes to the embedded store in ./.recorder; afterwards the
per-layer picture and the events are read back from it and printed (also
`recorder show last`).
"""

import torch
from torch import nn

import recorder


def tanh_mlp(depth: int, width: int, inputs: int, outputs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(depth):
        layers += [nn.Linear(inputs if i == 0 else width, width), nn.Tanh()]
    return nn.Sequential(*layers, nn.Linear(width, outputs))


@recorder.experiment(name="vanishing_gradients")
def main(depth: int = 5, width: int = 64, steps: int = 20, lr: float = 0.05,
         seed: int = 0) -> int:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x = torch.randn(256, 32, generator=generator)
    y = torch.sin(x @ torch.randn(32, width, generator=generator))  # a smooth target
    model = tanh_mlp(depth, width, inputs=32, outputs=width)
    recorder.watch(model)  # every step: NaN/Inf checks and per-layer gradient statistics
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    for step in range(steps):
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        recorder.log("train_loss", loss, step=step)
    return recorder.current_run().id


def report(run_id: int) -> None:
    """The last step's mean |grad_output| per layer, and the events, read from the store."""
    db = recorder.connect()
    series = {}
    for chunk in db["metrics"].find({"run_id": run_id, "name": {"$regex": "/out_mean_abs$"}}):
        series[chunk["name"].split("/")[1]] = chunk["values"][-1]
    last = series.pop("Sequential")
    print(f"run {run_id}: mean |grad_output| per layer at the last step, "
          "relative to the output layer:")
    for module in sorted(series, key=int):
        print(f"  {module:>3}  {series[module]:.3g}  1/{last / series[module]:.1f}")
    print(f"  out  {last:.3g}  1")
    print("events:")
    for e in sorted(db["events"].find({"run_id": run_id}),
                    key=lambda e: (e["step"], int(e["module"]) if e["module"].isdigit() else 0)):
        end = "still at the end" if e.get("end_step") is None else f"ended at {e['end_step']}"
        print(f"  {e['kind']:<10} module {e['module']:>2}  from step {e['step']}, {end}  "
              f"({e['stats']['ratio']:.3g}x the output layer)")


if __name__ == "__main__":
    report(main())
