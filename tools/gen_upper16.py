"""Write out ``_upper16_log_joint`` in ``src/gaussmix/backends/_cpu_kernels.py``.

The kernel holds the 136 entries of an upper triangular 16 × 16 factor in local variables
before its loop over rows, then does each row's 136 multiply-adds in registers: LLVM keeps
loads inside the loop that it cannot prove unaliased with the stores to ``lj``, and the same
loop reading ``P[k, i, j]`` in place ran 2.3x slower than the 4 × 4 blocked loops it
replaces (W2's shape, one thread; written out: 0.7x of their time). This script is the
kernel's source, the block between the markers in the kernel module its output.

Usage: ``python tools/gen_upper16.py`` (rewrites the block), ``--check`` (exit 1 when the
block differs from what this script writes; the test suite runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "src/gaussmix/backends/_cpu_kernels.py"
BEGIN = "# --- begin: written by tools/gen_upper16.py, do not edit ---\n"
END = "# --- end: written by tools/gen_upper16.py ---\n"
D = 16
# the first feature index that may be padding (the kernel serves 13 to 16 features)
FIRST_PAD = 12


def _wrap(head: str, items: list[str], indent: str, tail: str = "") -> list[str]:
    """``head`` + items joined by ``sep``, wrapped in parentheses at 100 columns."""
    line = f"{indent}{head}{' + '.join(items)}{tail}"
    if len(line) <= 100:
        return [line]
    out = [f"{indent}{head}("]
    cur = indent + "    "
    for n, item in enumerate(items):
        piece = item + (" +" if n < len(items) - 1 else "")
        if len(cur) + len(piece) + 1 > 100 and cur.strip():
            out.append(cur.rstrip())
            cur = indent + "    "
        cur += piece + " "
    out.append(cur.rstrip())
    out.append(f"{indent}){tail}")
    return out


def kernel() -> str:
    """The source of ``_upper16_log_joint``."""
    L = [
        "@nb.njit(**_JIT)",
        "def _upper16_log_joint(xt, m, K, mu, P, const, lj):",
        '    """:func:`_upper8_log_joint` for 13 to 16 features (padded to 16): every',
        "    coefficient in a local variable ahead of the loop over rows (see the script).",
        '    """',
        "    d = xt.shape[0]",
        "    dt = xt.dtype.type",
    ]
    idx = [str(i) if i < FIRST_PAD else f"i{i}" for i in range(D)]
    for i in range(FIRST_PAD, D):
        L.append(f"    i{i} = min({i}, d - 1)")
    L += ["    for k in range(K):", "        c = const[k]"]
    for a in range(0, D, 4):
        names = ", ".join(f"m{i}" for i in range(a, a + 4))
        loads = ", ".join(f"mu[k, {i}]" for i in range(a, a + 4))
        L.append(f"        {names} = {loads}")
    for i in range(D):
        for a in range(i, D, 4):
            js = range(a, min(a + 4, D))
            names = ", ".join(f"p{i}_{j}" for j in js)
            loads = ", ".join(f"P[k, {i}, {j}]" for j in js)
            L.append(f"        {names} = {loads}")
    L.append("        for r in range(m):")
    for i in range(D):
        L.append(f"            d{i} = xt[{idx[i]}, r] - m{i}")
    for j in range(D):
        terms = [f"d{i} * p{i}_{j}" for i in range(j + 1)]
        # partial sums of four: shorter dependency chains than one running sum
        groups = [" + ".join(terms[a : a + 4]) for a in range(0, len(terms), 4)]
        items = groups if len(groups) == 1 else [f"({g})" for g in groups]
        L += _wrap(f"y{j} = ", items, "            ")
    squares = [f"(y{a} * y{a} + y{a + 1} * y{a + 1} + y{a + 2} * y{a + 2} + y{a + 3} * y{a + 3})"
               for a in range(0, D, 4)]
    L += _wrap("q = ", squares, "            ")
    L.append("            lj[k, r] = c - dt(0.5) * q")
    return "\n".join(L) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true")
    args = parser.parse_args(argv)
    text = TARGET.read_text()
    head, sep, rest = text.partition(BEGIN)
    _, sep2, tail = rest.partition(END)
    if not sep or not sep2:
        print(f"markers not found in {TARGET}", file=sys.stderr)
        return 1
    new = head + BEGIN + "\n\n" + kernel() + "\n\n" + END + tail
    if args.check:
        return 0 if new == text else 1
    TARGET.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
