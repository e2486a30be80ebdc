"""Cost of tracking the sharpness at every GD step, relative to an untracked step.

    python benchmarks/bench_tracking.py [--device cpu|cuda] [--steps 60] [--json PATH]
    python benchmarks/bench_tracking.py --device cuda --dataset cifar10 --n-train 5000 --width 200 \\
        --lr 0.02 --warm-steps 2000 --json tracking_cifar.json      # the canonical fc-tanh 5k setting

Drives a tanh MLP near the edge of stability, then runs ``--steps`` GD steps without and with a
``curvature.SharpnessTracker(solver="block")`` call at every step, for several tracker settings (tolerance,
block size, fused gradient + first block product, amortised one-iteration-per-step), and audits
the tracked value against a Lanczos solve converged to 1e-8 every ``--verify-every`` steps.
Prints the cost of one Hessian-vector product in gradients (``curvature.time_hvps``), each
setting's measured ratio, HVPs per step and audited errors, and the cost model's ratio
(1 + m c unfused, about m c fused, for m products per step at c gradients each): the model's prediction
for other values of c (e.g. a GPU's) is labelled as such. Target on a GPU for the canonical
fc-tanh / CIFAR-10 5k setting: ratio <= 3 with relative eigenvalue error <= 1e-3.
"""

import numpy as np
from _common import eos_point, header, parser, write_json

from instabilities import curvature

SETTINGS = [  # (label, keyword arguments of measure_tracking_cost); all warm-start from step t-2
    ("tol 1e-2, b=2 (previous default)", dict(tol=1e-2, block_size=2)),
    ("tol 1e-2, b=2, fused", dict(tol=1e-2, block_size=2, fused=True)),
    ("tol 5e-3, b=2, fused", dict(tol=5e-3, block_size=2, fused=True)),
    ("tol 5e-3, b=2, fused, carried block", dict(tol=5e-3, block_size=2, fused=True, amortised=True)),
    ("tol 3e-3, b=2, fused, carried block", dict(tol=3e-3, block_size=2, fused=True, amortised=True)),
    ("one iteration/step, b=1, fused", dict(block_size=1, fused=True, amortised=True, max_iter=1)),
    ("one iteration/step, b=2, fused", dict(block_size=2, fused=True, amortised=True, max_iter=1)),
    ("one iteration/step, b=3, fused", dict(block_size=3, fused=True, amortised=True, max_iter=1)),
    (
        "tol 5e-3, b=2, fused, carried, forward HVP",
        dict(tol=5e-3, block_size=2, fused=True, amortised=True, hvp_method="forward"),
    ),
]
GPU_C = (0.25, 0.5, 1.0)  # per-vector HVP costs (in gradients) for which the model's ratios are printed


def model_ratio(m: float, c: float, b: int, fused: bool) -> float:
    """Cost model of a tracked step in untracked steps: m products at c gradients each, plus the gradient.

    Separate gradient: 1 + m c. Fused: the first block of b products carries the gradient, so it
    costs max(1, b c) and the other m - b products c each.
    """
    return max(1.0, b * c) + (m - b) * c if fused else 1.0 + m * c


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=60, help="timed and audited GD steps per setting")
    p.add_argument("--verify-every", type=int, default=3, help="audit every this many steps")
    p.add_argument("--dataset", default="digits")
    p.add_argument("--n-train", type=int, default=500)
    p.add_argument("--width", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.4)
    p.add_argument("--warm-steps", type=int, default=300, help="GD steps before the measurement (into the EoS)")
    p.add_argument("--block", type=int, default=2, help="block size at which one HVP's cost c is timed")
    args = p.parse_args()
    header("sharpness tracking cost", args.device)
    objective, theta, cfg = eos_point(
        args.device, args.n_train, (args.width, args.width), args.lr, args.warm_steps, args.dataset
    )
    top = curvature.lanczos(curvature.HessianOperator(objective, theta), 4, max_iter=300, tol=1e-8).values
    print(
        f"P = {theta.numel()}, {args.n_train} {args.dataset} examples, eta = {cfg.lr} (2/eta = {2 / cfg.lr:.3f}); "
        f"top-4 eigenvalues {np.round(top.double().cpu().numpy(), 4).tolist()}"
    )
    cost = curvature.time_hvps(objective, theta, block=args.block)
    print(f"one gradient {cost['gradient'] * 1e3:.2f} ms; in gradients (c):")
    for key in [k for k in cost if k.startswith("ratio_")]:
        print(f"  {key[6:]:34s} {cost[key[6:]] * 1e3:8.2f} ms = {cost[key]:5.2f} gradients")
    rows = []
    print(
        f"\n{'setting':44s} {'ratio':>6s} {'c_eff':>6s} {'HVPs/step':>9s} {'max err':>8s} {'median':>8s} "
        f"{'max rel res':>11s}"
    )
    for label, kw in SETTINGS:
        r = curvature.measure_tracking_cost(
            objective, theta, cfg.lr, steps=args.steps, k=1, verify_every=args.verify_every, warm_from=2, **kw
        )
        m = r["matvecs_per_step"]
        r.update(
            label=label,
            c_eff=(r["ratio"] if r["fused"] else r["ratio"] - 1.0) / m,
            median_verified_rel_error=float(np.median(r["verified_rel_errors"])),
        )
        rows.append(r)
        print(
            f"{label:44s} {r['ratio']:6.2f} {r['c_eff']:6.2f} {m:9.2f} {r['max_verified_rel_error']:8.1e} "
            f"{r['median_verified_rel_error']:8.1e} {r['max_relative_residual']:11.1e}"
        )
    print(
        "\nratio: median over steps of (tracked step time / untracked step time at the same point), measured here.\n"
        "c_eff: the per-HVP cost in gradients that the cost model needs to explain it, (ratio - 1)/m with a\n"
        "separate gradient, ratio/m fused (m = HVPs/step). Errors: audited against Lanczos converged to 1e-8, every "
        f"{args.verify_every} steps."
    )
    ok = [r for r in rows if r["max_verified_rel_error"] <= 1e-3]
    print("settings with every audited error <= 1e-3:", [r["label"] for r in ok] or "none")
    print("MODEL PREDICTION (not a measurement) of the tracked/untracked ratio at a per-HVP cost of c gradients:")
    for r in ok:
        preds = {c: model_ratio(r["matvecs_per_step"], c, r["block_size"], r["fused"]) for c in GPU_C}
        r["model_prediction_for_c"] = preds
        print(f"  {r['label']:44s} " + "  ".join(f"c={c}: {v:4.2f}" for c, v in preds.items()))
    write_json(
        args.json,
        "bench_tracking",
        args,
        {"n_params": theta.numel(), "top_eigenvalues": top, "hvp_cost": cost, "rows": rows},
    )


if __name__ == "__main__":
    main()
