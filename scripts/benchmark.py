"""Benchmarks of the hot paths, printed as a table and written as JSON.

    python scripts/benchmark.py <subcommand> [options] [--json-out results.json]

Each subcommand lives in a module beside this file (`bench_*.py`) that defines `register(subparsers)`: it adds its
subcommands with `set_defaults(run=callable)`, where the callable takes the parsed arguments and returns
`{"title": str, "columns": [...], "rows": [[...], ...], "details": {...}}`.
"""
import argparse
import importlib
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)

BENCH_MODULES = ("bench_realtime", "bench_training", "bench_classes")


def machine_description() -> dict:
    try:
        import torch
        torch_info = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                      "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    except ImportError:
        torch_info = {}
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), **torch_info}


def format_table(result: dict) -> str:
    columns = [str(c) for c in result["columns"]]
    rows = [[str(v) for v in row] for row in result["rows"]]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json-out", default=None, help="also write the results here (JSON)")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in BENCH_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue
        module.register(subparsers)
    args = parser.parse_args(argv)
    started = time.time()
    result = args.run(args)
    result.setdefault("details", {})
    result["machine"] = machine_description()
    result["command"] = " ".join(["python scripts/benchmark.py"] + (sys.argv[1:] if argv is None else list(argv)))
    result["seconds"] = round(time.time() - started, 1)
    print(f"\n{result['title']}\n")
    print(format_table(result))
    print(f"\nmachine: {result['machine']['cpu']}, {result['machine']['cores']} cores")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump(result, f, indent=1)
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
