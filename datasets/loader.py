"""Batches for training: an endless, resumable, rank-sharded batch sampler and a DataLoader set up to survive the
reference's known crashes (too many open files under `ulimit -n`, OpenCV threads inside forked workers).

The sampler hands out keys (index, epoch): a fixed permutation per epoch from (seed, epoch), cut into global
batches, each split over the processes. Batch `b` of the run is the same whatever the number of workers, and a
resumed run starts at the batch it stopped at, so the data order, and with it the loss sequence, continues exactly.
"""
from __future__ import annotations

import resource
import sys

import cv2
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from lwpose.codec import warm_up_encoder
from lwpose.errors import SettingError

# Below this many file descriptors, tensors travel between processes through named files instead of descriptors.
MIN_OPEN_FILES_FOR_FD_SHARING = 4096


class InfiniteBatchSampler(Sampler):
    """Yields lists of (index, epoch) keys for this process, epoch after epoch, from global batch `start_batch`."""

    def __init__(self, num_samples: int, batch_size: int, seed: int = 0, start_batch: int = 0, rank: int = 0,
                 world_size: int = 1, shuffle: bool = True):
        if num_samples < batch_size * world_size:
            raise SettingError(f"{num_samples} training samples cannot fill one batch of {batch_size} per process "
                               f"x {world_size} processes; lower the batch size", settings=("batch_size",))
        self.num_samples = num_samples
        self.batch_size = batch_size
        self.seed = seed
        self.start_batch = start_batch
        self.rank = rank
        self.world_size = world_size
        self.shuffle = shuffle

    @property
    def batches_per_epoch(self) -> int:
        return self.num_samples // (self.batch_size * self.world_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.num_samples)
        return np.random.default_rng((self.seed, epoch)).permutation(self.num_samples)

    def __iter__(self):
        batch = self.start_batch
        global_size = self.batch_size * self.world_size
        while True:
            epoch, position = divmod(batch, self.batches_per_epoch)
            order = self.epoch_order(epoch)
            while position < self.batches_per_epoch:
                chunk = order[position * global_size:(position + 1) * global_size]
                mine = chunk[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
                yield [(int(i), epoch) for i in mine]
                position += 1
                batch += 1


def raise_open_file_limit() -> int:
    """Lift the soft limit on open files to the hard limit; returns the limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 30


def prepare_worker_sharing() -> str:
    """Choose how workers hand tensors back: through file descriptors when the limit allows, else through files in
    shared memory (the `ulimit -n` crash of the reference: 'received 0 items of ancdata'). Returns the strategy."""
    if raise_open_file_limit() < MIN_OPEN_FILES_FOR_FD_SHARING:
        torch.multiprocessing.set_sharing_strategy("file_system")
    return torch.multiprocessing.get_sharing_strategy()


def init_worker(worker_id: int) -> None:
    # OpenCV's own thread pool inside forked workers oversubscribes the cores and can deadlock; one worker = one core.
    cv2.setNumThreads(0)
    torch.set_num_threads(1)


class BatchAssembler(Dataset):
    """Makes a whole batch per call, each sample written straight into its row of the batch tensors, which live in
    shared memory when made in a worker: no per-sample arrays, no collate copy, nothing copied again on the way to
    the training process (the batch-level work would otherwise cost about as much as making the samples)."""

    def __init__(self, dataset):
        self.dataset = dataset
        self.layout = dataset.sample_layout()

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, keys) -> dict:
        in_worker = get_worker_info() is not None
        batch = {}
        for name, (shape, dtype) in self.layout.items():
            empty = torch.from_numpy(np.empty(0, dtype))
            full_shape = (len(keys), *shape)
            if in_worker:  # allocated in shared memory at once, as torch's own collate does (no copy into it)
                storage = empty._typed_storage()._new_shared(int(np.prod(full_shape)), device=empty.device)
                batch[name] = empty.new(storage).resize_(full_shape)
            else:
                batch[name] = torch.from_numpy(np.empty(full_shape, dtype))
        rows = {name: tensor.numpy() for name, tensor in batch.items()}
        for row, key in enumerate(keys):
            self.dataset.sample_for_key(key, {name: array[row, ...] for name, array in rows.items()})  # views, 0-d too
        return batch


def make_train_loader(dataset, batch_sampler: InfiniteBatchSampler, num_workers: int, pin_memory: bool = False,
                      prefetch_factor: int = 4) -> DataLoader:
    """Batches (dicts of tensors) from `dataset`, a PoseTrainingDataset or anything with the same
    `sample_layout()` and `sample_for_key(key, out)`, in the order of `batch_sampler`."""
    prepare_worker_sharing()
    warm_up_encoder()  # compiled once here, inherited by the forked workers
    extra = {}
    if num_workers > 0:
        extra = {"worker_init_fn": init_worker, "persistent_workers": True, "prefetch_factor": prefetch_factor}
        if sys.platform.startswith("linux"):
            extra["multiprocessing_context"] = "fork"  # workers share the decoded-image cache, copy on write
    # batch_size=None: each key list from the sampler is one call, and the batch it returns passes unchanged.
    return DataLoader(BatchAssembler(dataset), sampler=batch_sampler, batch_size=None, num_workers=num_workers,
                      pin_memory=pin_memory, **extra)
