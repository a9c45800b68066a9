"""Closed-form complexity vs building the model and counting with fvcore (resnet50 at 224), one run.

python benchmarks/complexity_speed.py
"""

import time

import torch

import blocks


def per_call_seconds(fn, repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def main() -> None:
    closed = per_call_seconds(lambda: blocks.complexity("resnet50", resolution=224), 2000)
    image = torch.zeros(1, 3, 224, 224)
    measured = per_call_seconds(lambda: blocks.measured_flops(blocks.build_model("resnet50"), image), 3)
    print(f"closed form (config -> params, MACs):  {closed * 1e6:9.1f} us per call")
    print(f"build resnet50 + fvcore count:        {measured * 1e6:9.1f} us per call")
    print(f"ratio: closed form is {measured / closed:,.0f}x faster")


if __name__ == "__main__":
    main()
