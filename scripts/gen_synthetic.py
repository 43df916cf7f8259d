"""Write a seeded synthetic retail history (orders, customers, events) as Parquet.

A thin wrapper over :func:`fastseg.synthetic.generate`; ``fastseg gen`` does the same.

Example::

    python scripts/gen_synthetic.py --orders 10000000 --seed 0 --out data/synth-10m
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fastseg.errors import FastsegError
from fastseg.synthetic import generate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--orders", type=int, default=1_000_000, help="order rows, refunds included"
    )
    parser.add_argument(
        "--customers", type=int, default=None, help="customers incl. prospects (default orders/10)"
    )
    parser.add_argument("--events", type=int, default=None, help="event rows (default: orders)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--string-ids", action="store_true", help='customer ids like "C0123456"')
    parser.add_argument("--out", type=Path, default=Path("data/synthetic"), help="output folder")
    parser.add_argument("--chunk-rows", type=int, default=1_000_000, help="rows per row group")
    args = parser.parse_args(argv)
    try:
        ds = generate(
            args.out,
            orders=args.orders,
            customers=args.customers,
            events=args.events,
            seed=args.seed,
            string_ids=args.string_ids,
            chunk_rows=args.chunk_rows,
        )
    except FastsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path, rows in (
        (ds.orders, ds.n_orders),
        (ds.customers, ds.n_customers),
        (ds.events, ds.n_events),
    ):
        if path is not None:
            print(f"{path}  {rows:,} rows  {path.stat().st_size / 1e6:,.1f} MB")
    print(f"seed {ds.seed}, {ds.seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
