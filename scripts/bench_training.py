"""Training benchmarks for scripts/benchmark.py:

    python scripts/benchmark.py data     # data pipeline: training samples per second per core
    python scripts/benchmark.py train    # training iterations per second, data pipeline on and off (+ AMP on CUDA)

`data` runs the real DataLoader (one worker process per core) over coco_mini_train prepared for lwop18 at 368x368
with the default augmentation (scale, rotation, crop, flip, colour jitter) and targets + masks, and counts samples
arriving in the training process (collated batches, so inter-process transfer is included). It measures two image
modes: decoded once into memory at start-up (JPEG decoding NOT per sample; the start-up decode is reported
separately) and decoded per sample (JPEG decoding included). Per core: the wall-clock rate divided by the worker
count, and samples per CPU-second of the workers and the training process together (Linux /proc), which is what
one fully available core delivers, also on a machine shared with other work.
"""
from __future__ import annotations

import itertools
import os
import tempfile
import time

import cv2
import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED_DATA = os.path.join(os.path.dirname(os.path.dirname(HERE)), "shared", "data")
COCO_MINI_LABELS = os.path.join(SHARED_DATA, "coco_mini_train", "annotations", "person_keypoints_train2017.json")
COCO_MINI_IMAGES = os.path.join(SHARED_DATA, "coco_mini_train", "train2017")


def prepared_coco_mini(keypoints: str, labels: str, images: str):
    from lwpose.datasets.coco_reader import read_coco_keypoints
    from lwpose.datasets.prepared_labels import build_prepared_labels
    from lwpose.keypoints import load_keypoint_set

    target = load_keypoint_set(keypoints)
    return build_prepared_labels(read_coco_keypoints(labels, target), target, images_folder=images)


def _stage_timings(dataset, count: int) -> dict:
    """Milliseconds per sample of each step, in this process (one core), for the breakdown."""
    from lwpose.codec import encode
    from lwpose.datasets.augmentation import (
        apply_colour_jitter,
        compose,
        crop_matrix,
        crop_scale,
        flip_keypoints,
        reduced_to_full,
        sample_augment_params,
        transform_keypoints,
    )
    from lwpose.datasets.pose_dataset import decode_image

    totals = dict.fromkeys(("jpeg_decode", "warp", "colour_jitter", "targets", "ignore_mask", "whole_sample"), 0.0)
    size = dataset.augmentation.input_size
    for n in range(count):
        index = n % len(dataset)
        image_index, person = dataset.labels.samples[index]
        info = dataset.labels.images[image_index]
        params = sample_augment_params(np.random.default_rng((1, n)), dataset.augmentation)
        x, y, w, h = info.bboxes[person]
        matrix = crop_matrix((x + w / 2, y + h / 2), h, params, dataset.augmentation)
        reduction = 4 if crop_scale(h, params, dataset.augmentation) <= 0.25 else \
            2 if crop_scale(h, params, dataset.augmentation) <= 0.5 else 1
        t0 = time.perf_counter()
        image = decode_image(dataset.images.paths[image_index], reduction)
        t1 = time.perf_counter()
        crop = cv2.warpAffine(image, compose(matrix, reduced_to_full(reduction)), (size, size),
                              borderValue=(128, 128, 128))
        t2 = time.perf_counter()
        apply_colour_jitter(crop, params)
        t3 = time.perf_counter()
        keypoints = flip_keypoints(transform_keypoints(info.keypoints, matrix), size,
                                   dataset.keypoint_set.flip_permutation)
        encode(keypoints, dataset.keypoint_set, (dataset.map_size, dataset.map_size), dataset.targets.stride)
        t4 = time.perf_counter()
        dataset._loss_weight_map(image_index, matrix, params.flip)
        t5 = time.perf_counter()
        dataset[(index, n)]
        t6 = time.perf_counter()
        for key, value in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5)):
            totals[key] += value
    return {k: round(v / count * 1000, 3) for k, v in totals.items()}


def _cpu_seconds(worker_pids: list[int]) -> float:
    """CPU time (user + system) used so far by this process and the given workers: what the pipeline costs,
    whatever else shares the machine (wall-clock rates drop on a loaded machine, this does not)."""
    total = time.process_time()
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in worker_pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
        except (OSError, IndexError, ValueError):
            return float("nan")
    return total


def run_data(args) -> dict:
    from lwpose.codec import warm_up_encoder
    from lwpose.datasets.augmentation import AugmentationConfig
    from lwpose.datasets.loader import InfiniteBatchSampler, make_train_loader
    from lwpose.datasets.pose_dataset import PoseTrainingDataset

    cv2.setNumThreads(0)
    cores = os.cpu_count() or 1
    workers = args.workers or cores
    start = time.perf_counter()
    warm_up_encoder()
    compile_seconds = time.perf_counter() - start
    labels = prepared_coco_mini(args.keypoints, args.labels, args.images_folder)
    augmentation = AugmentationConfig(input_size=args.input_size)
    rows, details = [], {"samples_in_dataset": len(labels), "numba_compile_or_cache_load_s": round(compile_seconds, 2),
                         "workers": workers, "batch_size": args.batch_size, "input_size": args.input_size,
                         "keypoint_set": args.keypoints, "load_average_at_start": os.getloadavg()}
    for cache in ("decoded", "none"):
        start = time.perf_counter()
        dataset = PoseTrainingDataset(labels, augmentation=augmentation, image_cache=cache, progress=False)
        setup = time.perf_counter() - start
        if cache == "none":
            details["per_sample_ms_one_core"] = _stage_timings(dataset, min(200, args.samples))
        loader = make_train_loader(dataset, InfiniteBatchSampler(len(dataset), args.batch_size, seed=0),
                                   num_workers=workers)
        batches = iter(loader)
        for _ in range(2 * workers):  # workers started and every queue primed
            next(batches)
        worker_pids = [w.pid for w in getattr(batches, "_workers", [])]
        count = 0
        cpu_start = _cpu_seconds(worker_pids)
        start = time.perf_counter()
        while count < args.samples:
            count += len(next(batches)["image"])
        seconds = time.perf_counter() - start
        cpu_seconds = _cpu_seconds(worker_pids) - cpu_start
        del batches, loader
        rate = count / seconds
        rows.append([("images decoded once at start-up" if cache == "decoded" else "image decoded per sample"),
                     "no" if cache == "decoded" else "yes", workers, f"{rate:.0f}", f"{rate / min(workers, cores):.0f}",
                     f"{count / cpu_seconds:.0f}" if cpu_seconds > 0 else "-"])
        details[f"{cache}_setup_s"] = round(setup, 2)
    details["load_average_at_end"] = os.getloadavg()
    return {"title": f"Data pipeline: augmentation + targets + masks at {args.input_size}x{args.input_size}, "
                     f"{args.keypoints}, coco_mini_train ({len(labels)} samples), DataLoader with {workers} worker "
                     f"process(es), batch {args.batch_size}",
            "columns": ["images", "JPEG decoding per sample", "workers", "samples/s", "samples/s per core",
                        "samples per CPU-second"],
            "rows": rows, "details": details}


def run_train(args) -> dict:
    from lwpose.datasets.augmentation import AugmentationConfig
    from lwpose.datasets.loader import InfiniteBatchSampler, make_train_loader
    from lwpose.datasets.pose_dataset import PoseTrainingDataset
    from lwpose.training.setup import OptimizerSettings, init_processes, starting_network
    from lwpose.training.trainer import RunSettings, Trainer

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    processes = init_processes(device)
    labels = prepared_coco_mini(args.keypoints, args.labels, args.images_folder)
    dataset = PoseTrainingDataset(labels, augmentation=AugmentationConfig(input_size=args.input_size),
                                  progress=False)
    sampler = InfiniteBatchSampler(len(dataset), args.batch_size, seed=0)
    loader = make_train_loader(dataset, sampler, args.workers if args.workers is not None else os.cpu_count() or 1,
                               pin_memory=processes.device.type == "cuda")
    batches = iter(loader)
    static_batch = next(batches)
    cuda = processes.device.type == "cuda"
    from lwpose.training.setup import check_amp

    def runs_here(amp) -> bool:  # bf16 only where the GPU computes it (not V100, T4)
        try:
            check_amp(amp, processes.device)
            return True
        except ValueError:
            return False

    amp_modes = [amp for amp in (None, "bf16", "fp16") if runs_here(amp)] if cuda else [None]
    rows = []
    with tempfile.TemporaryDirectory() as experiments:
        for amp in amp_modes:
            start = starting_network(labels.keypoint_set, "lwop", 1)
            settings = RunSettings(experiments, 0, sampler.batches_per_epoch, args.batch_size, amp=amp,
                                   progress=False)
            trainer = Trainer(settings, start.network, start.architecture, labels.keypoint_set, None, processes,
                              OptimizerSettings())
            trainer.network.train()
            for source in ("on", "off"):
                iterator = batches if source == "on" else itertools.repeat(static_batch)
                for _ in range(args.warmup):
                    trainer.step(iterator)
                if cuda:
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                start_time = time.perf_counter()
                for _ in range(args.iterations):
                    trainer.step(iterator)
                if cuda:
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - start_time
                memory = f"{torch.cuda.max_memory_allocated() / 2 ** 30:.2f}" if cuda else "-"
                rows.append([str(processes.device), amp or "fp32", source, f"{args.iterations / seconds:.3f}",
                             f"{args.iterations * args.batch_size / seconds:.1f}", memory])
            del trainer
    return {"title": f"Training iterations (lwop, 1 refinement stage, {args.keypoints}, {args.input_size}x"
                     f"{args.input_size}, batch {args.batch_size}): data pipeline on (DataLoader) and off (one "
                     "batch reused)",
            "columns": ["device", "precision", "data pipeline", "iterations/s", "samples/s", "peak GPU GiB"],
            "rows": rows, "details": {"iterations": args.iterations, "warmup": args.warmup,
                                      "load_average": os.getloadavg()}}


def register(subparsers) -> None:
    data = subparsers.add_parser("data", help="training samples per second per core of the data pipeline")
    data.add_argument("--samples", type=int, default=2000, help="samples to time per mode")
    data.add_argument("--batch-size", type=int, default=16)
    data.add_argument("--workers", type=int, default=None, help="worker processes (default: one per core)")
    train = subparsers.add_parser("train", help="training iterations per second, data pipeline on and off")
    train.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    train.add_argument("--batch-size", type=int, default=8)
    train.add_argument("--iterations", type=int, default=5)
    train.add_argument("--warmup", type=int, default=2)
    train.add_argument("--workers", type=int, default=None)
    for parser, run in ((data, run_data), (train, run_train)):
        parser.add_argument("--input-size", type=int, default=368)
        parser.add_argument("--keypoints", default="lwop18")
        parser.add_argument("--labels", default=COCO_MINI_LABELS)
        parser.add_argument("--images-folder", default=COCO_MINI_IMAGES)
        parser.set_defaults(run=run)
