"""The first command to run on a GPU machine: every GPU path of training and inference, for real, in one go.

    python scripts/gpu_check.py                      # about 5-8 minutes on one GPU; writes outputs/gpu_check/
    python scripts/gpu_check.py --shared /data/lwpose-shared --json-out gpu.json

On a CUDA machine it:
- trains on coco_mini_train with --amp fp16 and --amp bf16 (bf16 must be refused at start-up on a GPU without it)
  and checks that the loss falls; times training iterations with the data pipeline on and off and the peak GPU
  memory (scripts/benchmark.py train);
- times the network at 256x456 and 368x656 in fp32, fp16, fp16 channels-last and compiled (benchmark.py network);
- runs demo.py end to end on vtest.avi (benchmark.py demo);
- runs torchrun --nproc_per_node=<GPUs> for a few iterations with validation, then resumes that run's checkpoint
  on one GPU after giving it the random states of a pre-per-rank checkpoint from an 8-GPU machine;
- times the data pipeline (benchmark.py data) and says whether the GPU would wait for it;
then prints a table and writes one JSON file. Exit status 0 when every check passed.

Without a GPU it says so, runs the same checks at a tiny size on the CPU (their machinery, not GPU figures), and
exits 0 when those pass. Data comes from --shared (default: $LWPOSE_SHARED, else ../shared beside the checkout, as
the tests find it).
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "scripts"))

import torch  # noqa: E402

from benchmark import format_table  # noqa: E402

PYTHON = sys.executable


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", default=os.environ.get("LWPOSE_SHARED", os.path.join(os.path.dirname(ROOT),
                                                                                         "shared")),
                        help="the shared data folder (default: $LWPOSE_SHARED, else ../shared)")
    parser.add_argument("--work-dir", default=os.path.join("outputs", "gpu_check"),
                        help="where runs, logs and the JSON go (emptied first)")
    parser.add_argument("--json-out", default=None, help="default: WORK_DIR/gpu_check.json")
    parser.add_argument("--checkpoint-path", default=None,
                        help="weights for the network and demo checks (default: Open Model Zoo's, imported from "
                             "--shared)")
    parser.add_argument("--step-timeout", type=float, default=300, help="seconds any one step may take")
    return parser.parse_args(argv)


class Check:
    """One step's outcome: passed or not, what was measured, and the command that reproduces it."""

    def __init__(self, name: str):
        self.name = name
        self.passed: bool | None = None
        self.summary = ""
        self.details: dict = {}
        self.commands: list[str] = []
        self.seconds = 0.0

    def to_json(self) -> dict:
        return {"name": self.name, "passed": self.passed, "summary": self.summary, "seconds": round(self.seconds, 1),
                "commands": self.commands, "details": self.details}


def run(check: Check, command: list, timeout: float, env: dict | None = None) -> subprocess.CompletedProcess:
    """A command as a user types it, from the checkout's root; its output kept for the JSON when it fails."""
    check.commands.append(" ".join(map(str, command)))
    print(f"$ {check.commands[-1]}", flush=True)
    try:
        result = subprocess.run([str(c) for c in command], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                                env=dict(os.environ, **(env or {})))
    except subprocess.TimeoutExpired as e:
        def text(output) -> str:
            return output.decode(errors="replace") if isinstance(output, bytes) else output or ""
        result = subprocess.CompletedProcess(e.cmd, 124, text(e.stdout), text(e.stderr) + f"\ntimed out ({timeout} s)")
    if result.returncode != 0:
        check.details.setdefault("failures", []).append({"command": check.commands[-1], "status": result.returncode,
                                                         "stdout_tail": str(result.stdout)[-1500:],
                                                         "stderr_tail": str(result.stderr)[-2500:]})
    return result


def benchmark(check: Check, subcommand: list, json_path: str, timeout: float) -> dict | None:
    result = run(check, [PYTHON, "scripts/benchmark.py", "--json-out", json_path, *subcommand], timeout)
    if result.returncode != 0 or not os.path.exists(json_path):
        return None
    with open(json_path) as f:
        return json.load(f)


def logged_losses(log_csv: str) -> list[float]:
    if not os.path.exists(log_csv):
        return []
    with open(log_csv, newline="") as f:
        return [float(row["loss"]) for row in csv.DictReader(f)]


# ----------------------------------------------------------------------------------------------------- checks
def check_environment(cuda: bool) -> Check:
    check = Check("environment")
    import lwpose  # noqa: F401  (checks the torch version)
    from lwpose.training.setup import amp_problem

    details = {"torch": torch.__version__, "cuda_build": torch.version.cuda, "gpus": []}
    if cuda:
        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            details["gpus"].append({"name": torch.cuda.get_device_name(index), "capability": f"{major}.{minor}",
                                    "memory_gib": round(torch.cuda.get_device_properties(index).total_memory
                                                        / 2 ** 30, 1)})
        try:
            details["bf16"] = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:
            details["bf16"] = torch.cuda.get_device_capability(0)[0] >= 8
    # The start-up refusal of bf16 on a GPU without it, by its logic (any machine).
    refused = amp_problem("bf16", "cuda", bf16_supported=False, device_name="Tesla T4 (compute capability 7.5)")
    check.passed = bool(refused) and "fp16" in refused
    check.details = details
    check.summary = (", ".join(f"{g['name']} ({g['capability']}, {g['memory_gib']} GiB)" for g in details["gpus"])
                     if cuda else "no CUDA GPU") + f"; torch {torch.__version__}"
    return check


def prepare_labels(check: Check, shared: str, work: str, timeout: float) -> str | None:
    labels = os.path.join(work, "coco_mini_prepared.json")
    result = run(check, [PYTHON, "scripts/prepare_train_labels.py", "--labels", coco_labels(shared),
                         "--images-folder", coco_images(shared), "--keypoints", "lwop18", "--output-name", labels],
                 timeout)
    return labels if result.returncode == 0 else None


def coco_labels(shared: str) -> str:
    return os.path.join(shared, "data", "coco_mini_train", "annotations", "person_keypoints_train2017.json")


def coco_images(shared: str) -> str:
    return os.path.join(shared, "data", "coco_mini_train", "train2017")


def check_training(labels: str, device: str, amp: str, size: dict, work: str, timeout: float,
                   bf16_supported: bool) -> Check:
    """A short run with `amp` on `device`: the loss must fall (and bf16 be refused where the GPU lacks it)."""
    check = Check(f"train --amp {amp}")
    experiments = os.path.join(work, "runs")
    result = run(check, [PYTHON, "train.py", "--prepared-train-labels", labels, "--experiments-folder", experiments,
                         "--experiment-name", f"amp_{amp}", "--device", device, "--amp", amp, "--base-lr", "1e-3",
                         "--max-iterations", str(size["iterations"]), "--log-after", "1", "--batch-size",
                         str(size["batch"]), "--input-size", str(size["input"]), "--num-workers",
                         str(size["workers"]), "--checkpoint-after", "100000", "--no-progress", *size["network"]],
                 timeout)
    if device.startswith("cuda") and amp == "bf16" and not bf16_supported:
        check.passed = result.returncode == 2 and "bf16 needs a GPU with bfloat16" in result.stderr
        check.summary = "refused at start-up, as it must be on this GPU" if check.passed else "not refused"
        return check
    losses = logged_losses(os.path.join(experiments, f"amp_{amp}", "log.csv"))
    computed = "float16" if amp == "fp16" else "bfloat16"
    window = max(1, len(losses) // 4)
    first, last = (sum(losses[:window]) / window, sum(losses[-window:]) / window) if losses else (None, None)
    check.passed = (result.returncode == 0 and f"the network computed in {computed}" in result.stdout
                    and len(losses) == size["iterations"] and last < first)
    check.details = {"losses": losses}
    check.summary = (f"loss {first:.2f} -> {last:.2f} over {len(losses)} iterations, computed in {computed}"
                     if losses else f"no loss logged (exit status {result.returncode})")
    return check


def check_training_speed(device: str, shared: str, size: dict, work: str, timeout: float) -> Check:
    check = Check("training speed")
    result = benchmark(check, ["train", "--device", device, "--batch-size", str(size["speed_batch"]),
                               "--iterations", str(size["speed_iterations"]), "--warmup", "3",
                               "--input-size", str(size["speed_input"]),
                               "--workers", str(size["workers"]), "--labels", coco_labels(shared),
                               "--images-folder", coco_images(shared)],
                       os.path.join(work, "bench_train.json"), timeout)
    check.passed = result is not None
    if result:
        check.details = result
        rates = {(row[1], row[2]): float(row[3]) for row in result["rows"]}
        check.summary = "; ".join(
            f"{precision}: {rates[(precision, 'on')]:.2f} it/s with data, {rates[(precision, 'off')]:.2f} without"
            + (f", {row[5]} GiB" if row[5] != "-" else "")
            for precision, row in {r[1]: r for r in result["rows"] if r[2] == "off"}.items())
        check.details["batch_size"] = size["speed_batch"]
    return check


def check_data_pipeline(shared: str, work: str, timeout: float, training: Check, samples: int,
                        cuda: bool) -> Check:
    """The data pipeline's samples per second (every core) against what training consumes without it."""
    check = Check("data pipeline")
    result = benchmark(check, ["data", "--samples", str(samples), "--labels", coco_labels(shared), "--images-folder",
                               coco_images(shared)], os.path.join(work, "bench_data.json"), timeout)
    check.passed = result is not None
    if result:
        check.details = result
        pipeline = {("cached" if row[1] == "no" else "per_sample"): float(row[3]) for row in result["rows"]}
        per_cpu_second = {("cached" if row[1] == "no" else "per_sample"): row[5] for row in result["rows"]}
        check.summary = (f"{pipeline['per_sample']:.0f} samples/s decoding a JPEG per sample "
                         f"({per_cpu_second['per_sample']} per CPU-second), {pipeline['cached']:.0f} from the cache")
        rows = training.details.get("rows") if training.passed and cuda else None
        if rows:
            consumed = max(float(row[4]) for row in rows if row[2] == "off")  # samples/s, fastest precision
            check.details["training_consumes_samples_per_second"] = consumed
            waits = pipeline["per_sample"] < consumed
            check.details["gpu_waits_for_per_sample_decoding"] = waits
            check.summary += (f"; training without data takes {consumed:.0f} samples/s: the GPU "
                              + ("WAITS for" if waits else "does not wait for") + " per-sample JPEG decoding")
    return check


def check_network(checkpoint: str, device: str, work: str, timeout: float, sizes: list[str]) -> Check:
    check = Check("network")
    result = benchmark(check, ["network", "--checkpoint-path", checkpoint, "--device", device, "--sizes", *sizes,
                               "--repeats", "20", "--warmup", "3", "--openvino-ir", ""],
                       os.path.join(work, "bench_network.json"), timeout)
    check.passed = result is not None and not any("unavailable" in str(row[1]) for row in result["rows"]
                                                  if str(row[0]).startswith("torch"))
    if result:
        check.details = result
        check.summary = "; ".join(f"{row[0]}: {' | '.join(row[1:1 + len(sizes)])}" for row in result["rows"])
    return check


def check_demo(checkpoint: str, device: str, shared: str, work: str, timeout: float, frames: int) -> Check:
    check = Check("demo")
    result = benchmark(check, ["demo", "--checkpoint-path", checkpoint, "--device", device, "--video",
                               os.path.join(shared, "data", "video", "vtest.avi"), "--frames", str(frames),
                               "--backends", "torch", "--openvino-ir", ""],
                       os.path.join(work, "bench_demo.json"), timeout)
    check.passed = result is not None and all(row[3] == str(frames) for row in result["rows"])
    if result:
        check.details = result
        check.summary = "; ".join(f"{row[0]} at {row[1]}: {row[4]} fps (network {row[6]} ms, decoding {row[7]} ms)"
                                  for row in result["rows"])
    return check


def check_torchrun(labels: str, device: str, processes: int, shared: str, size: dict, work: str,
                   timeout: float, amp: str | None) -> Check:
    """torchrun with one process per GPU (two on the CPU), validation included; then that run's checkpoint,
    given the random states a checkpoint from before per-rank states had on an 8-GPU machine, resumes in one
    process (on fewer GPUs than it was written with)."""
    check = Check(f"torchrun x{processes} + resume on fewer devices")
    experiments = os.path.join(work, "runs")
    iterations = size["iterations"]
    # coco_mini_train holds 68 training samples for lwop18: one global batch must fit in them
    batch = max(1, min(size["batch"], COCO_MINI_SAMPLES // processes))
    common = ["--prepared-train-labels", labels, "--experiments-folder", experiments, "--experiment-name", "ddp",
              "--device", device, "--batch-size", str(batch), "--input-size", str(size["input"]),
              "--num-workers", str(size["workers"]), "--log-after", "1", "--checkpoint-after", str(iterations),
              "--val-labels", coco_labels(shared), "--val-images-folder", coco_images(shared),
              "--val-max-images", str(size["val_images"]), "--val-height-size", str(size["val_height"]),
              "--no-progress", "--dist-timeout-minutes", "5", *size["network"], *(["--amp", amp] if amp else [])]
    env = {"OMP_NUM_THREADS": "1"} if device == "cpu" else None
    result = run(check, [PYTHON, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}",
                         "train.py", *common, "--max-iterations", str(iterations), "--val-after", str(iterations)],
                 timeout, env)
    shares = f"over {processes} processes" if processes > 1 else "images"
    ddp_ok = result.returncode == 0 and "val AP" in result.stdout and shares in result.stdout
    check.details["validation"] = [line for line in result.stdout.splitlines()
                                   if line.startswith("iteration ") and ": val AP" in line]
    resumed_ok = False
    checkpoint = os.path.join(experiments, "ddp", "checkpoints", f"checkpoint_iter_{iterations}.pth")
    if ddp_ok and os.path.exists(checkpoint):
        from lwpose.interop.checkpoint import load_checkpoint, save_checkpoint

        state = load_checkpoint(checkpoint)
        own = state["training"]["rng"]["per_rank"][0]
        state["training"]["rng"] = {key: own[key] for key in ("python", "numpy", "torch")}
        template = own.get("cuda", torch.zeros(16, dtype=torch.uint8))
        state["training"]["rng"]["cuda"] = [template.clone() for _ in range(8)]  # as get_rng_state_all() on 8 GPUs
        save_checkpoint(state, checkpoint)
        result = run(check, [PYTHON, "train.py", *common, "--max-iterations", str(iterations + 2), "--val-after",
                             "100000", "--resume"], timeout)
        resumed_ok = result.returncode == 0 and f"done: iteration {iterations + 2}" in result.stdout
    check.passed = ddp_ok and resumed_ok
    check.summary = ((check.details["validation"][-1].strip() if check.details["validation"] else "no validation")
                     + ("; resumed on 1 process from 8 devices' random states" if resumed_ok else "; resume FAILED"))
    return check


def weights(args, check: Check, work: str) -> str | None:
    if args.checkpoint_path:
        return args.checkpoint_path
    own = os.path.join(ROOT, "weights", "hpe0001.pth")
    if os.path.exists(own):
        return own
    path = os.path.join(work, "hpe0001.pth")
    xml = os.path.join(args.shared, "weights", "human-pose-estimation-0001", "FP16-INT8",
                       "human-pose-estimation-0001.xml")
    result = run(check, [PYTHON, "scripts/import_weights.py", "--openvino-xml", xml, "--output", path], 300)
    return path if result.returncode == 0 else None


# ------------------------------------------------------------------------------------------------------- main
COCO_MINI_SAMPLES = 64  # a little under the 68 samples coco_mini_train gives lwop18
GPU_SIZE = {"iterations": 40, "batch": 16, "input": 368, "workers": min(8, os.cpu_count() or 1), "network": [],
            "speed_batch": 32, "speed_iterations": 20, "speed_input": 368, "val_images": 16, "val_height": 368}
# On the CPU the same checks run at a size that only shows their machinery works.
CPU_SIZE = {"iterations": 8, "batch": 2, "input": 64, "workers": 0,
            "network": ["--backbone-width", "0.25", "--num-channels", "32", "--num-refinement-stages", "0"],
            "speed_batch": 2, "speed_iterations": 2, "speed_input": 128, "val_images": 4, "val_height": 128}


def main(argv=None) -> int:
    args = parse_args(argv)
    start = time.perf_counter()
    cuda = torch.cuda.is_available()
    work = os.path.abspath(args.work_dir)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    json_out = args.json_out or os.path.join(work, "gpu_check.json")
    missing = [p for p in (coco_labels(args.shared), os.path.join(args.shared, "data", "video", "vtest.avi"))
               if not os.path.exists(p)]
    if missing:
        print(f"error: shared data missing: {', '.join(missing)} (give --shared)", file=sys.stderr)
        return 2
    if not cuda:
        print(f"no CUDA GPU found (torch {torch.__version__}, CUDA build: {torch.version.cuda or 'none'}): running "
              "the CPU-side checks only; their figures are not GPU figures", flush=True)
    device, size = ("cuda", GPU_SIZE) if cuda else ("cpu", CPU_SIZE)
    checks = []

    def timed(make_check) -> Check:
        began = time.perf_counter()
        check = make_check()
        check.seconds = time.perf_counter() - began
        print(f"[{'pass' if check.passed else 'FAIL'}] {check.name}: {check.summary}", flush=True)
        checks.append(check)
        return check

    environment = timed(lambda: check_environment(cuda))
    bf16_supported = bool(environment.details.get("bf16", True))
    setup = Check("set-up")
    labels = prepare_labels(setup, args.shared, work, args.step_timeout)
    failed_setup = [] if labels else ["prepare_train_labels.py failed"]
    if labels:
        for amp in ("fp16", "bf16"):
            timed(lambda: check_training(labels, device, amp, size, work, args.step_timeout, bf16_supported))
        speed = timed(lambda: check_training_speed(device, args.shared, size, work, args.step_timeout))
        timed(lambda: check_data_pipeline(args.shared, work, args.step_timeout, speed, 2000 if cuda else 400, cuda))
        processes = torch.cuda.device_count() if cuda else 2
        timed(lambda: check_torchrun(labels, device, processes, args.shared, size, work, args.step_timeout,
                                     ("bf16" if bf16_supported else "fp16") if cuda else None))
    if cuda:
        checkpoint = weights(args, setup, work)
        if checkpoint is None:
            failed_setup.append("no checkpoint for the network and demo checks")
        else:
            timed(lambda: check_network(checkpoint, device, work, args.step_timeout, ["256x456", "368x656"]))
            timed(lambda: check_demo(checkpoint, device, args.shared, work, args.step_timeout, 300))
    if failed_setup:
        setup.passed, setup.summary = False, "; ".join(failed_setup)
        checks.append(setup)
    passed = all(check.passed for check in checks)
    report = {"gpu_found": cuda, "passed": passed, "seconds": round(time.perf_counter() - start, 1),
              "checks": [check.to_json() for check in checks]}
    from benchmark import machine_description

    report["machine"] = machine_description()
    with open(json_out, "w") as f:
        json.dump(report, f, indent=1, default=str)
    print()
    print(format_table({"columns": ["check", "result", "what was seen"],
                        "rows": [[c.name, "pass" if c.passed else "FAIL", c.summary] for c in checks]}))
    print(f"\n{'GPU' if cuda else 'no GPU: CPU-side'} checks {'passed' if passed else 'FAILED'} in "
          f"{report['seconds']:.0f} s; wrote {json_out}")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
