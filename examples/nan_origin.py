"""Where did the NaN come from? One bad input value, found by `recorder.watch`.

    python examples/nan_origin.py                 # a NaN in one input at step 5
    python examples/nan_origin.py bad_step=12 nan=raise

A Linear -> ReLU -> Linear regression trains on clean batches, except that at `bad_step`
one value of one input is NaN. The first module whose output is not finite is `0` (the
first Linear) in the forward pass of that step: that is the origin event. Everything after
it in that step (ReLU, the second Linear, and the whole backward pass) is recorded as
propagation, and since the NaN reaches the weights, every later step is summarised per module
rather than recorded one event at a time. With nan=raise the run stops at the origin with
`recorder.NonFiniteError`. The run goes to the embedded store in ./.recorder; the events
are read back from it and printed (also `recorder show last`).
"""

import torch
from torch import nn

import recorder


@recorder.experiment(name="nan_origin")
def main(bad_step: int = 5, steps: int = 10, lr: float = 0.1, nan: str = "record",
         seed: int = 0) -> int:
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    recorder.watch(model, nan=nan)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    run_id = recorder.current_run().id
    for step in range(steps):
        x = torch.randn(32, 8, generator=generator)
        y = x[:, :1] - 2 * x[:, 1:2]
        if step == bad_step:
            x[3, 5] = float("nan")  # one bad value in one sample
        loss = nn.functional.mse_loss(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        recorder.log("train_loss", loss, step=step)
    return run_id


def report(run_id: int) -> None:
    db = recorder.connect()
    events = sorted(db["events"].find({"run_id": run_id}), key=lambda e: e["step"])
    for e in events:
        if e["kind"] == "nonfinite":
            s = e["stats"]
            print(f"run {run_id}: first non-finite value: module {e['module']} "
                  f"({e['module_type']}), {e['phase']} pass, step {e['step']}")
            print(f"  output shape {s['shape']}: {s['nan']} NaN, {s['posinf']} +Inf, "
                  f"{s['neginf']} -Inf; finite values in [{s['min']:.3g}, {s['max']:.3g}]")
            print("  then reached: " + ", ".join(f"{p['module']} ({p['phase']})"
                                                 for p in e["propagation"]))
        elif e["kind"] == "nonfinite_summary":
            print(f"  later: module {e['module']} non-finite in {e['count']} steps, "
                  f"{e['first_step']} to {e['last_step']}")


if __name__ == "__main__":
    report(main())
