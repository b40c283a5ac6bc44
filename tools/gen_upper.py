"""Write out ``_upper4_log_joint``, ``_upper8_log_joint`` and ``_upper16_log_joint`` in
``src/gaussmix/backends/_cpu_kernels.py``.

Each kernel holds the means and the upper triangular factor of one component in local
variables before its loop over rows (10, 36 or 136 factor entries), then does each row's
multiply-adds of ``(x - μ_k) P_k`` in registers: LLVM keeps loads inside the loop that it
cannot prove unaliased with the stores to ``lj``. Measured against what they replace (one
thread): at d = 8 the blocked general loops went through memory, 2.2x slower; at d = 16 the
same loop reading ``P[k, i, j]`` in place ran 2.3x slower than the 4 × 4 blocks, the written-out
one 0.7x of their time. This script is the kernels' source, the block between the markers in
the kernel module its output.

Usage: ``python tools/gen_upper.py`` (rewrites the block), ``--check`` (exit 1 when the
block differs from what this script writes; the test suite runs it).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

TARGET = Path(__file__).resolve().parents[1] / "src/gaussmix/backends/_cpu_kernels.py"
BEGIN = "# --- begin: written by tools/gen_upper.py, do not edit ---\n"
END = "# --- end: written by tools/gen_upper.py ---\n"
# padded width: the fewest features it serves (``_padded_width`` in the kernel module);
# the rows of the missing features are read at index d - 1 and multiplied by zero entries
WIDTHS = {4: 3, 8: 5, 16: 13}


def _wrap(head: str, items: list[str], indent: str) -> list[str]:
    """``head`` + items joined by `` + ``, wrapped in parentheses at 100 columns."""
    line = f"{indent}{head}{' + '.join(items)}"
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
    out.append(f"{indent})")
    return out


def _docstring(width: int) -> list[str]:
    if width != 8:
        low = WIDTHS[width]
        text = f":func:`_upper8_log_joint` for {low} to {width} features (padded to {width})."
        return [f'    """{text}"""']
    return [
        '    """``lj[k, :m]`` for 5 to 8 features and upper triangular factors (those of',
        "    every M-step): the multiply-adds of each row's ``(x - μ_k) P_k`` written out, every",
        "    coefficient in a local variable ahead of the loop over rows (tools/gen_upper.py).",
        "    Fewer features are padded with zero factor entries (``mu`` (K, 8) and ``P``",
        "    (K, 8, 8) from :func:`_pad`; the rows of ``xt`` read in place of the missing",
        '    features are then multiplied by 0)."""',
    ]


def kernel(width: int) -> str:
    """The source of ``_upper{width}_log_joint``."""
    low = WIDTHS[width]
    L = [
        "@nb.njit(**_JIT)",
        f"def _upper{width}_log_joint(xt, m, K, mu, P, const, lj):",
        *_docstring(width),
        "    d = xt.shape[0]",
        "    dt = xt.dtype.type",
    ]
    idx = [str(i) if i < low else f"i{i}" for i in range(width)]
    for i in range(low, width):
        L.append(f"    i{i} = min({i}, d - 1)")
    L += ["    for k in range(K):", "        c = const[k]"]
    for a in range(0, width, 4):
        names = ", ".join(f"m{i}" for i in range(a, a + 4))
        loads = ", ".join(f"mu[k, {i}]" for i in range(a, a + 4))
        L.append(f"        {names} = {loads}")
    for i in range(width):
        for a in range(i, width, 4):
            js = range(a, min(a + 4, width))
            names = ", ".join(f"p{i}_{j}" for j in js)
            loads = ", ".join(f"P[k, {i}, {j}]" for j in js)
            L.append(f"        {names} = {loads}")
    L.append("        for r in range(m):")
    for i in range(width):
        L.append(f"            d{i} = xt[{idx[i]}, r] - m{i}")
    for j in range(width):
        terms = [f"d{i} * p{i}_{j}" for i in range(j + 1)]
        # partial sums of four: shorter dependency chains than one running sum
        groups = [" + ".join(terms[a : a + 4]) for a in range(0, len(terms), 4)]
        items = groups if len(groups) == 1 else [f"({g})" for g in groups]
        L += _wrap(f"y{j} = ", items, "            ")
    squares = [
        f"(y{a} * y{a} + y{a + 1} * y{a + 1} + y{a + 2} * y{a + 2} + y{a + 3} * y{a + 3})"
        for a in range(0, width, 4)
    ]
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
    block = "\n\n".join(kernel(w) for w in WIDTHS)
    new = head + BEGIN + "\n\n" + block + "\n\n" + END + tail
    if args.check:
        return 0 if new == text else 1
    TARGET.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
