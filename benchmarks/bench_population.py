"""Loop vs vmapped population: a learning-rate sweep of full-batch GD.

    python benchmarks/bench_population.py [--device cpu|cuda] [--members 16] [--steps 200] [--json PATH]

Runs the same configs once as a Python loop of ``instabilities.train.train`` calls and once as one
``instabilities.population.train_population`` call, and prints both wall times, their ratio and
the largest relative difference between the two sets of loss curves (float rounding only).
For comparison, the measurement quoted in the project's issue (H100, 64 learning rates x 1000
steps, 2x100 tanh MLP, 1000 mnist1d examples) was 134.7 s as a loop and 3.1 s vmapped (44x):
    python benchmarks/bench_population.py --device cuda --members 64 --steps 1000 --n-train 1000
"""

import numpy as np
from _common import header, parser, write_json

from instabilities.models import ModelSpec
from instabilities.population import population_configs, time_loop_vs_population
from instabilities.train import TrainConfig


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--members", type=int, default=16)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--n-train", type=int, default=1000)
    p.add_argument("--width", type=int, default=100)
    p.add_argument("--dataset", default="mnist1d")
    args = p.parse_args()
    header("loop vs vmapped population", args.device)
    base = TrainConfig(
        dataset=args.dataset,
        n_train=args.n_train,
        n_test=100,
        device=args.device,
        model=ModelSpec(widths=(args.width, args.width)),
        steps=args.steps,
    )
    lrs = np.geomspace(0.01, 1.0, args.members)
    r = time_loop_vs_population(population_configs(base, etas=lrs))
    print(
        f"{r['members']} learning rates x {r['steps']} full-batch GD steps, MLP {args.width}x{args.width} tanh, "
        f"{args.n_train} {args.dataset} examples"
    )
    print(f"loop of train():   {r['loop_seconds']:8.2f} s")
    print(f"vmapped population:{r['population_seconds']:8.2f} s")
    print(f"speedup:           {r['speedup']:8.1f} x")
    print(f"max relative difference of the loss curves, first 10 steps: {r['max_rel_loss_diff_first_10_steps']:.2e}")
    print("max relative difference over the whole run, per learning rate (rounding grows at the edge of stability):")
    for lr, d in zip(r["etas"], r["max_rel_loss_diff_per_member"]):
        print(f"  eta = {lr:8.4f}: {d:.2e}")
    write_json(args.json, "bench_population", args, r)


if __name__ == "__main__":
    main()
