"""Cost of tracking the sharpness at every GD step, relative to an untracked step.

    python benchmarks/bench_tracking.py [--device cpu|cuda] [--steps 20]

Near the edge of stability, runs ``--steps`` GD steps without and with a
``block_eigs.SharpnessTracker`` call before every step (warm starts, block HVPs), for several
tracker settings, and audits the tracked value against a converged Lanczos solve every 5 steps.
Also prints the cost of one Hessian-vector product in gradients (c), so that the ratio can be
read as about 1 + m c for m products per step. Target on a GPU for the canonical fc-tanh / CIFAR-10
5k setting: ratio <= 3 with relative eigenvalue error <= 1e-3.
"""
from _common import eos_point, header, parser
from instabilities.block_eigs import measure_hvp_cost, measure_tracking_cost

SETTINGS = [  # (label, keyword arguments of measure_tracking_cost)
    ("tol 1e-2, warm from t-1, reverse HVP", dict(tol=1e-2, warm_from=1, hvp_method="reverse")),
    ("tol 1e-2, warm from t-2, reverse HVP", dict(tol=1e-2, warm_from=2, hvp_method="reverse")),
    ("tol 1e-2, warm from t-2, forward HVP", dict(tol=1e-2, warm_from=2, hvp_method="forward")),
    ("2 block iterations max, warm from t-2", dict(tol=1e-2, warm_from=2, hvp_method="reverse", max_iter=2)),
]


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--n-train", type=int, default=500)
    p.add_argument("--width", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.4)
    p.add_argument("--warm-steps", type=int, default=300)
    args = p.parse_args()
    header("sharpness tracking cost", args.device)
    objective, theta, cfg = eos_point(args.device, args.n_train, (args.width, args.width), args.lr, args.warm_steps)
    cost = measure_hvp_cost(objective, theta)
    g = cost["gradient"]
    print(f"P = {theta.numel()}, eta = {cfg.lr} (2/eta = {2 / cfg.lr:.3f}); one gradient {g * 1e3:.1f} ms")
    for name, t in cost.items():
        if name != "gradient":
            print(f"  {name:32s} {t * 1e3:8.1f} ms = {t / g:5.2f} gradients")
    print(f"{'setting':40s} {'ratio':>6s} {'matvecs/step':>12s} {'max verified rel err':>21s}")
    for label, kw in SETTINGS:
        r = measure_tracking_cost(objective, theta, cfg.lr, steps=args.steps, k=1, block_size=2, verify_every=5, **kw)
        print(f"{label:40s} {r['ratio']:6.2f} {r['matvecs_per_step']:12.2f} {r['max_verified_rel_error']:21.2e}")


if __name__ == "__main__":
    main()
