"""Out-of-core EM: rows/s per pass and peak RSS of ``GaussianMixture().fit(path)``.

Writes a file of ``--size`` bytes of float64 rows drawn from a K-component mixture into a
temporary directory (removed at the end, also on Ctrl-C), then fits it in a fresh Python
process (``engine="stream"``, default k-means init on the reservoir sample) and reports

* rows/s of one E-step pass (median over passes after the first, which also holds the init),
* the sampling pass (reservoir + k-means) time,
* peak RSS of the fitting process (``VmHWM``) and its peak right after the imports.

The peer (``--peer``, on by default for files up to 1 GiB) is the in-memory fit of the same
file (``np.load`` then ``engine="auto"``, the same kernel as the stream's): the ratio is the
price of streaming.

Usage::

    python benchmarks/bench_stream.py --size 2GiB --iters 2 --no-peer
    python benchmarks/bench_stream.py --size 256MiB --format parquet

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed from the fitting processes' environment; the
BLAS in use is printed (threadpoolctl).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

_UNITS = {
    "": 1,
    "b": 1,
    "kib": 1 << 10,
    "mib": 1 << 20,
    "gib": 1 << 30,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
}


def parse_size(text: str) -> int:
    match = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", text)
    if not match or match.group(2).lower() not in _UNITS:
        raise argparse.ArgumentTypeError(f"size like 2GiB, 512MiB or 1000000, got {text!r}")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def mixture(K: int, d: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    means = rng.uniform(-8, 8, (K, d))
    scales = rng.uniform(0.5, 1.5, (K, d))
    return means, scales


def write_data(path: str, fmt: str, n: int, d: int, K: int) -> None:
    """n rows, written 250 000 at a time (bounded memory)."""
    means, scales = mixture(K, d)
    rng = np.random.default_rng(1)
    step = 250_000

    def blocks():
        for start in range(0, n, step):
            rows = min(step, n - start)
            z = rng.integers(0, K, rows)
            yield means[z] + rng.standard_normal((rows, d)) * scales[z]

    if fmt == "npy":
        with open(path, "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "<f8", "fortran_order": False, "shape": (n, d)}
            )
            for block in blocks():
                f.write(block.tobytes())
    elif fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = [f"x{j}" for j in range(d)]
        schema = pa.schema([(name, pa.float64()) for name in names])
        with pq.ParquetWriter(path, schema, compression="none") as writer:
            for block in blocks():
                writer.write_table(pa.Table.from_arrays(list(block.T), names=names))
    else:
        with open(path, "w") as f:
            f.write(",".join(f"x{j}" for j in range(d)) + "\n")
            for block in blocks():
                np.savetxt(f, block, delimiter=",", fmt="%.10g")


def child(args) -> None:
    """Runs in a fresh process: fit and report (JSON on stdout)."""
    import resource
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from threadpoolctl import threadpool_info

    from gaussmix import GaussianMixture

    def rss_mib():
        # VmHWM: peak RSS of this process image. ru_maxrss would do on its own, but on Linux
        # it carries over the parent's peak through fork + exec
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    rss_imports = rss_mib()
    stamps = []
    kw = dict(n_components=args.components, tol=0.0, max_iter=args.iters, random_state=0)
    load_s = None
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        if args.child == "stream":
            gm = GaussianMixture(engine="stream", **kw)
            gm.fit(args.path, callback=lambda p: stamps.append(time.perf_counter()))
        else:
            if args.format == "npy":
                X = np.load(args.path)
            else:
                import pyarrow.csv as pcsv
                import pyarrow.parquet as pq

                read = pq.read_table if args.format == "parquet" else pcsv.read_csv
                X = np.ascontiguousarray(read(args.path).to_pandas().to_numpy())
            load_s = time.perf_counter() - t0
            gm = GaussianMixture(engine="auto", **kw)  # the fast CPU engine when installed
            gm.fit(X, callback=lambda p: stamps.append(time.perf_counter()))
    total = time.perf_counter() - t0
    passes = np.diff(stamps)
    blas = [
        {k: info.get(k) for k in ("internal_api", "architecture", "num_threads", "version")}
        for info in threadpool_info()
        if info.get("user_api") == "blas"
    ]
    print(
        json.dumps(
            {
                "engine": args.child,
                "n_samples": args.rows,
                "total_s": total,
                "first_iteration_s": stamps[0] - t0,
                "load_s": load_s,
                "pass_s": float(np.median(passes)) if passes.size else None,
                "peak_rss_mib": rss_mib(),
                "rss_after_imports_mib": rss_imports,
                "blas": blas,
            }
        )
    )


def run_child(engine: str, path: str, args, rows: int) -> dict:
    env = {
        k: v for k, v in os.environ.items() if k not in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
    }
    cmd = [
        sys.executable,
        __file__,
        "--child",
        engine,
        "--path",
        path,
        "--format",
        args.format,
        "--components",
        str(args.components),
        "--iters",
        str(args.iters),
        "--rows",
        str(rows),
    ]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
    if out.returncode:
        sys.exit(f"{engine} fit failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size",
        type=parse_size,
        default=parse_size("256MiB"),
        help="bytes of float64 data (default 256MiB); e.g. 2GiB",
    )
    parser.add_argument("--format", choices=["npy", "parquet", "csv"], default="npy")
    parser.add_argument("--features", type=int, default=8)
    parser.add_argument("--components", type=int, default=4)
    parser.add_argument("--iters", type=int, default=3, help="EM iterations (>= 2)")
    parser.add_argument(
        "--peer",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also fit in memory (default: when --size <= 1GiB)",
    )
    parser.add_argument("--tmpdir", default=None, help="where the file goes (default: $TMPDIR)")
    parser.add_argument("--child", choices=["stream", "memory"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if args.iters < 2:
        parser.error("--iters must be >= 2 (the first pass also holds the initialisation)")
    d, K = args.features, args.components
    n = args.size // (8 * d)
    peer = args.peer if args.peer is not None else args.size <= (1 << 30)
    with tempfile.TemporaryDirectory(prefix="gaussmix-bench-", dir=args.tmpdir) as tmp:
        free = shutil.disk_usage(tmp).free
        if free < 1.5 * args.size:
            sys.exit(
                f"{tmp} has {free / 2**30:.1f} GiB free; the file needs "
                f"{args.size / 2**30:.1f} GiB (choose --tmpdir or a smaller --size)"
            )
        path = os.path.join(tmp, f"data.{args.format}")
        t = time.perf_counter()
        write_data(path, args.format, n, d, K)
        size = os.path.getsize(path)
        print(
            f"wrote {n:,} rows x {d} ({size / 2**20:,.0f} MiB {args.format}) in "
            f"{time.perf_counter() - t:.0f} s; K={K} full covariances, {args.iters} EM "
            f"iterations",
            flush=True,
        )
        results = [run_child("stream", path, args, n)]
        if peer:
            results.append(run_child("memory", path, args, n))
    print(f"BLAS: {results[0]['blas']}")
    print(
        f"{'engine':<8} {'rows/s per pass':>16} {'pass s':>8} {'1st iter s':>11} "
        f"{'peak RSS MiB':>13} {'RSS after imports':>18}"
    )
    for r in results:
        print(
            f"{r['engine']:<8} {n / r['pass_s']:>16,.0f} {r['pass_s']:>8.1f} "
            f"{r['first_iteration_s']:>11.1f} {r['peak_rss_mib']:>13,.0f} "
            f"{r['rss_after_imports_mib']:>18,.0f}"
        )
    if peer:
        stream_r, memory_r = results
        print(
            f"stream / in-memory: {memory_r['pass_s'] / stream_r['pass_s']:.2f}x the "
            f"throughput per pass, {stream_r['peak_rss_mib'] / memory_r['peak_rss_mib']:.2f}x "
            f"the peak RSS"
        )


if __name__ == "__main__":
    main()
