"""Report: the built schedules against the published tables of the SS-DDPM notes (§3.1–§3.6),
and the build time of each schedule.

Usage: python benchmarks/schedules_tables.py [--no-cache]
(MSTAR_CACHE_DIR chooses the cache folder; --no-cache rebuilds everything.)
"""
from __future__ import annotations

import argparse
import time

from mstar_engine.schedules import SCHEDULES

TABLES = {
    # name, T, parameter, index offset (paper t = code t + offset), {t: published}
    "ss-cosine": (1000, "alpha_bar", 0, {1: 0.9999, 11: 0.9938, 101: 0.388, 501: 6.0e-3, 901: 5.0e-4, 1000: 2.4e-6}),
    "cosine": (1000, "alpha_bar", 0, {1: 0.99996, 11: 0.9993, 101: 0.972, 501: 0.493, 901: 0.024, 1000: 2.4e-6}),
    "beta-cosine": (1000, "nu", 0, {1: 8695, 2: 2895, 11: 126, 101: 1.10, 251: 0.244, 501: 0.0888, 751: 0.0454,
                                    1000: 0.00198}),
    "dirichlet-exp": (64, "nu", 1, {0: 2000, 1: 1600, 8: 336, 16: 56.3, 32: 1.58, 48: 0.043, 63: 1e-6}),
    "wishart-exp": (64, "df", 1, {0: 20000, 1: 15390, 8: 2456, 16: 306, 32: 9.5, 48: 5.07, 62: 5.0, 63: 5}),
    "wishart-exp xi": (64, "xi", 1, {0: 1, 1: 0.992, 8: 0.934, 16: 0.864, 32: 0.70, 48: 0.49, 62: 0.126, 63: 1e-4}),
    "vmf-spline": (100, "kappa", 1, {0: 1413, 1: 1000, 10: 79.2, 30: 5.01, 50: 2.53, 70: 1.00, 90: 0.031,
                                     99: 0.0015}),
    "categorical-d3pm": (1000, "bar_beta", 0, {1: 0.858, 11: 0.866, 101: 0.927, 501: 0.975, 1000: 1.0}),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-cache", action="store_true")
    args = parser.parse_args()
    for label, (steps, param, offset, table) in TABLES.items():
        name = label.split()[0]
        options = {"cache": False} if args.no_cache and "cache" in SCHEDULES[name].options else {}
        start = time.perf_counter()
        built = SCHEDULES[name].build(steps, **options)
        seconds = time.perf_counter() - start
        values = built["mean"] ** 2 if param == "alpha_bar" else built[param]
        print(f"{label} (T = {steps}, {param}; built in {seconds:.2f} s)")
        for t, ref in table.items():
            got = float(values[t + offset])
            print(f"  t = {t + offset:4d}  published {ref:<10g} here {got:<12.5g} {100 * (got / ref - 1):+7.2f} %")


if __name__ == "__main__":
    main()
