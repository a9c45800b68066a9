"""Per-trial overhead of the search (sampling, closed-form check, config composition) against one
training step of the digits network, and the share of candidates rejected without training.

    python benchmarks/search_overhead.py
"""

from __future__ import annotations

import statistics
import time

import optuna
import torch
from omegaconf import OmegaConf

import blocks
from search.config import compose_config, prepare
from search.space import candidate_cost, iter_samples, parse_flops, parse_space, suggest, to_overrides

BUDGETS = ("1.5M", "3M")


def timed(fn, repeats: int) -> float:
    """Median seconds of `fn()` over `repeats` calls."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def training_step_seconds(spec: blocks.ModelSpec, batches) -> float:
    net = blocks.build_model(spec)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    loss_fn = torch.nn.CrossEntropyLoss()
    images, labels = next(iter(batches))

    def step():
        loss = loss_fn(net(images), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    return timed(step, 50)


def main() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = compose_config("search=optuna")
    parts = prepare(cfg)
    base, resolution = parts.spec.to_dict(), parts.datamodule.resolution
    dims = parse_space(OmegaConf.to_container(cfg.search.space))
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=0, constant_liar=True))
    for _ in range(100):  # TPE's cost grows with history: give it some
        trial = study.ask()
        suggest(trial, dims, base)
        study.tell(trial, torch.rand(1).item())
    samples = []

    def sample():
        trial = study.ask()
        samples.append(suggest(trial, dims, base))
        study.tell(trial, 0.5)

    sampling = timed(sample, 50)
    closed_form = timed(lambda: candidate_cost(base, samples[-1], resolution), 200)
    composing = timed(lambda: prepare(compose_config(*to_overrides(samples[-1], base))), 20)
    parts.datamodule.setup("fit")
    step = training_step_seconds(parts.spec, parts.datamodule.train_dataloader())
    overhead = sampling + closed_form + composing
    print(f"TPE sampling (100 trials of history): {sampling * 1e3:8.2f} ms")
    print(f"closed-form FLOPs and params check:  {closed_form * 1e3:8.2f} ms")
    print(f"config composition and validation:  {composing * 1e3:8.2f} ms")
    print(f"one training step (digits network, batch {parts.datamodule.batch_size}): {step * 1e3:8.2f} ms")
    print(
        f"per-trial overhead / one training step: {overhead / step:.2f}  "
        f"(an over-budget candidate costs sampling + check only: {(sampling + closed_form) / step:.2f} steps)"
    )
    flops = [candidate_cost(base, p, resolution).flops for p in iter_samples(dims, base, 5000)]
    for budget in BUDGETS:
        rejected = sum(f > parse_flops(budget) for f in flops) / len(flops)
        print(f"budget.flops={budget}: {rejected:.1%} of 5,000 random candidates rejected without training")


if __name__ == "__main__":
    main()
