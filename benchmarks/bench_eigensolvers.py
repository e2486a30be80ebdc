"""Top-k Hessian eigensolvers on the same HVP operator: time, Hessian-vector products, accuracy.

    python benchmarks/bench_eigensolvers.py [--device cpu|cuda] [--k 2] [--tol 1e-3] [--json PATH]

Trains a tanh MLP on digits with full-batch GD until it is near the edge of stability (several
top eigenvalues close to 2/eta), then compares our Lanczos, our block Krylov solver, SciPy's
``eigsh(which='LA')`` (ARPACK; every product makes a host round trip) and deflated power
iteration against a tightly converged Lanczos reference (``curvature.compare_solvers``).
"""

from _common import eos_point, header, parser, write_json

from instabilities import curvature


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--k", type=int, default=2)
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--n-train", type=int, default=500)
    p.add_argument("--width", type=int, default=50)
    p.add_argument("--lr", type=float, default=0.4)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--dataset", default="digits")
    args = p.parse_args()
    header("eigensolvers on one Hessian", args.device)
    objective, theta, cfg = eos_point(
        args.device, args.n_train, (args.width, args.width), args.lr, args.steps, args.dataset
    )
    print(f"P = {theta.numel()} parameters, eta = {cfg.lr}, 2/eta = {2 / cfg.lr:.3f}, k = {args.k}, tol = {args.tol}")
    rows = curvature.solver_rows(
        curvature.compare_solvers(  # reference: Lanczos converged to 1e-9
            objective,
            theta,
            k=args.k,
            solvers=("lanczos", "block", "eigsh", "power"),
            tol=args.tol,
            timed=True,
            reference="lanczos",
            n_reference=args.k,
            reference_tol=1e-9,
            reference_max_iter=400,
            reference_seed=12345,
        )
    )
    base = rows[0]["seconds"]
    print(f"{'solver':28s} {'seconds':>8s} {'x lanczos':>9s} {'matvecs':>8s} {'max rel err':>12s}  values")
    for r in rows:
        print(
            f"{r['solver']:28s} {r['seconds']:8.3f} {r['seconds'] / base:9.2f} {r['matvecs']:8d} "
            f"{r['max_rel_error']:12.2e}  {r['values']}"
        )
    write_json(args.json, "bench_eigensolvers", args, {"n_params": theta.numel(), "rows": rows})


if __name__ == "__main__":
    main()
