#!/usr/bin/env python3
"""PyVRP peer solver for the Solomon VRPTW benchmark (see shared/data/vrp/README.md).

Usage:
    python pyvrp_solomon.py --seconds 10 --seed 1 R101.txt RC101.txt ...

Prints one JSON line per instance:
    {"instance", "seed", "seconds", "cost", "vehicles", "feasible", "routes"}

where "cost" is the total Euclidean distance in the instance's original units
(double precision, rounded to 2 decimals) and "routes" lists the Solomon
customer numbers (CUST NO.) of each non-empty route in visiting order.

Install the pinned solver with `pip install -r requirements.txt` (next to this file).

Conventions and choices
-----------------------
* Reading: `pyvrp.read()` only parses the VRPLIB format; on an original Solomon
  text file it raises "Instance does not conform to the VRPLIB format". We
  therefore parse the file with `vrplib.read_instance(path, instance_format=
  "solomon")` (vrplib is a PyVRP dependency) and build `pyvrp.ProblemData`
  ourselves through the public constructors.
* Integer encoding: PyVRP works on integers. We apply the README's "exact"
  convention, i.e. the same as PyVRP's `round_func="exact"`: every
  coordinate-derived distance and every time (ready/due times, service times)
  becomes round(1000 * value); travel time == distance. Demands and the
  capacity are already integers and are left as they are (scaling both by the
  same factor would change nothing). Coarser conventions ("round", "trunc",
  "dimacs") change the optimum, so they are not used.
* Objective: distance only (no fixed vehicle cost), fleet = VEHICLE NUMBER from
  the file. This is the objective behind the "distance" reference values; it
  does not minimise the number of vehicles first.
* Reported figures are recomputed from the routes in double precision
  (np.hypot on the original coordinates), so they do not carry the 1e-3
  rounding of the integer model. "feasible" is PyVRP's own verdict on the
  integer model AND an independent double-precision check (capacity, time
  windows with waiting, return to the depot by its due time, every customer
  exactly once, fleet size).
* Single thread: PyVRP's search (iterated local search in 0.14) runs in one
  thread; we also cap BLAS/OpenMP pools at one thread before numpy loads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import vrplib  # noqa: E402
from pyvrp import ActivityType, Client, Depot, Location, ProblemData, VehicleType, solve  # noqa: E402
from pyvrp.stop import MaxRuntime  # noqa: E402

SCALE = 1000  # README "exact" convention: round(1000 * value)


def scaled(values) -> np.ndarray:
    return np.round(SCALE * np.asarray(values, dtype=np.float64)).astype(np.int64)


def read_solomon(path: Path) -> dict:
    inst = vrplib.read_instance(str(path), instance_format="solomon")
    coords = np.asarray(inst["node_coord"], dtype=np.float64)
    diff = coords[:, None, :] - coords[None, :, :]
    dist = np.hypot(diff[..., 0], diff[..., 1])  # double-precision Euclidean
    return {
        "name": str(inst.get("name") or path.stem),
        "fleet": int(inst["vehicles"]),
        "capacity": int(inst["capacity"]),
        "coords": coords,
        "demand": np.asarray(inst["demand"], dtype=np.int64),
        "tw": np.asarray(inst["time_window"], dtype=np.float64),
        "service": np.asarray(inst["service_time"], dtype=np.float64),
        "dist": dist,
    }


def build_data(inst: dict) -> ProblemData:
    n = len(inst["coords"])  # row 0 is the depot, rows 1..n-1 are customers
    tw = scaled(inst["tw"])
    service = scaled(inst["service"])
    matrix = scaled(inst["dist"])
    np.fill_diagonal(matrix, 0)

    locations = [Location(x=float(x), y=float(y)) for x, y in inst["coords"]]
    depots = [Depot(location=0, tw_early=int(tw[0, 0]), tw_late=int(tw[0, 1]))]
    clients = [
        Client(
            location=i,
            delivery=[int(inst["demand"][i])],
            service_duration=int(service[i]),
            tw_early=int(tw[i, 0]),
            tw_late=int(tw[i, 1]),
            name=str(i),
        )
        for i in range(1, n)
    ]
    vehicle_types = [
        VehicleType(
            num_available=inst["fleet"],
            capacity=[inst["capacity"]],
            start_depot=0,
            end_depot=0,
            tw_early=int(tw[0, 0]),
            tw_late=int(tw[0, 1]),  # back at the depot by its due time
            unit_distance_cost=1,
            unit_duration_cost=0,
        )
    ]
    return ProblemData(
        locations=locations,
        clients=clients,
        depots=depots,
        vehicle_types=vehicle_types,
        distance_matrices=[matrix],
        duration_matrices=[matrix],  # travel time == distance
    )


def extract_routes(data: ProblemData, solution) -> list[list[int]]:
    clients = data.clients()
    routes = []
    for route in solution.routes():
        seq = [clients[act.idx].location for act in route.schedule() if act.type == ActivityType.CLIENT]
        if seq:
            routes.append(seq)
    return routes


def float_check(inst: dict, routes: list[list[int]]) -> tuple[float, bool, list[str]]:
    """Distance and feasibility of `routes` in double precision (README conventions)."""
    dist, tw, service, demand = inst["dist"], inst["tw"], inst["service"], inst["demand"]
    eps = 1e-9
    problems: list[str] = []
    total = 0.0
    seen: list[int] = []
    for r, seq in enumerate(routes):
        load = int(sum(int(demand[c]) for c in seq))
        if load > inst["capacity"]:
            problems.append(f"route {r}: load {load} > capacity {inst['capacity']}")
        t, prev = float(tw[0, 0]), 0
        for c in seq:
            total += dist[prev, c]
            t = max(t + dist[prev, c], tw[c, 0])
            if t > tw[c, 1] + eps:
                problems.append(f"route {r}: customer {c} starts at {t:.4f} > due {tw[c, 1]:g}")
            t += service[c]
            prev = c
        total += dist[prev, 0]
        t += dist[prev, 0]
        if t > tw[0, 1] + eps:
            problems.append(f"route {r}: returns at {t:.4f} > depot due {tw[0, 1]:g}")
        seen.extend(seq)
    expected = set(range(1, len(inst["coords"])))
    if sorted(seen) != sorted(expected):
        problems.append("not every customer is served exactly once")
    if len(routes) > inst["fleet"]:
        problems.append(f"{len(routes)} routes > fleet {inst['fleet']}")
    return total, not problems, problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="time limit per instance (s)")
    parser.add_argument("--seed", type=int, default=1, help="PyVRP random seed")
    parser.add_argument("files", nargs="+", type=Path, help="Solomon instance files")
    args = parser.parse_args(argv)

    status = 0
    for path in args.files:
        inst = read_solomon(path)
        data = build_data(inst)
        result = solve(data, stop=MaxRuntime(args.seconds), seed=args.seed, collect_stats=False, display=False)
        routes = extract_routes(data, result.best)
        distance, ok, problems = float_check(inst, routes)
        feasible = bool(result.is_feasible()) and ok
        for p in problems:
            print(f"{inst['name']}: {p}", file=sys.stderr)
        if not feasible:
            status = 1
        print(
            json.dumps(
                {
                    "instance": inst["name"],
                    "seed": args.seed,
                    "seconds": args.seconds,
                    "cost": round(distance, 2) if math.isfinite(distance) else None,
                    "vehicles": len(routes),
                    "feasible": feasible,
                    "routes": routes,
                }
            ),
            flush=True,
        )
    return status


if __name__ == "__main__":
    sys.exit(main())
