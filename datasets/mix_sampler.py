"""Batches that keep each source's share: every batch of every process holds the same number of samples of each
source (the recipe's `source_ratio` of the batch, rounded once), whatever the number of processes.

Each source is an endless stream of its samples: round r is a permutation of them drawn from (seed, source, r), and
a sample's key is (index, r), so it is augmented differently each round. Process `rank`'s batch b takes the next
`count[s]` samples of each source's stream at position (b * world_size + rank) * count[s]: the processes never share
a sample within a round, and a resumed run (start_batch) continues exactly where it stopped. An epoch, for the
learning-rate schedule, is `sum(samples per epoch) / (batch_size * world_size)` batches, where a source's samples per
epoch are its size times its `sample_ratio_factor`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from torch.utils.data import Sampler

from lwpose.errors import SettingError


def per_batch_counts(ratios: Sequence[float], batch_size: int, names: Sequence[str]) -> list[int]:
    """Samples of each source in a batch of `batch_size`: the ratios' shares rounded by largest remainder; every
    source needs at least one."""
    ratios = np.asarray(ratios, np.float64) / np.sum(ratios)
    exact = ratios * batch_size
    counts = np.floor(exact).astype(np.int64)
    for s in np.argsort(-(exact - counts), kind="stable")[:batch_size - counts.sum()]:
        counts[s] += 1
    for s, count in enumerate(counts):
        if count == 0:
            raise SettingError(f"source '{names[s]}' would get no sample in a batch of {batch_size} (its share "
                               f"{ratios[s]:.3g} is {exact[s]:.2f} samples); raise the batch size or its source_ratio",
                               settings=("batch_size",))
    return counts.tolist()


class MixedBatchSampler(Sampler):
    """Yields lists of (index, round) keys for this process, batch after batch, from global batch `start_batch`."""

    def __init__(self, source_samples: Sequence[np.ndarray], counts: Sequence[int], samples_per_epoch: Sequence[float],
                 seed: int = 0, start_batch: int = 0, rank: int = 0, world_size: int = 1):
        if len(source_samples) != len(counts) or any(len(s) == 0 for s in source_samples):
            raise ValueError("every source needs samples and a count per batch")
        self.source_samples = [np.asarray(s, np.int64) for s in source_samples]
        self.counts = list(counts)
        self.batch_size = int(sum(counts))
        self.samples_per_epoch = list(samples_per_epoch)
        self.seed = seed
        self.start_batch = start_batch
        self.rank = rank
        self.world_size = world_size
        self._permutations: dict[tuple[int, int], np.ndarray] = {}

    @property
    def batches_per_epoch(self) -> int:
        return max(1, math.floor(sum(self.samples_per_epoch) / (self.batch_size * self.world_size)))

    def _permutation(self, source: int, round_: int) -> np.ndarray:
        key = (source, round_)
        if key not in self._permutations:
            if len(self._permutations) > 64:
                self._permutations.clear()
            self._permutations[key] = np.random.default_rng((self.seed, source, round_)).permutation(
                len(self.source_samples[source]))
        return self._permutations[key]

    def stream(self, source: int, start: int, count: int) -> list[tuple[int, int]]:
        """Keys at positions start .. start + count - 1 of a source's stream."""
        size = len(self.source_samples[source])
        keys = []
        for position in range(start, start + count):
            round_, offset = divmod(position, size)
            keys.append((int(self.source_samples[source][self._permutation(source, round_)[offset]]), round_))
        return keys

    def batch(self, batch: int) -> list[tuple[int, int]]:
        """This process's keys of global batch `batch`."""
        slot = batch * self.world_size + self.rank
        keys = []
        for source, count in enumerate(self.counts):
            keys.extend(self.stream(source, slot * count, count))
        return keys

    def __iter__(self):
        batch = self.start_batch
        while True:
            yield self.batch(batch)
            batch += 1


def mixed_sampler_for(labels, ratios: Sequence[float] | None, sample_ratio_factors: Sequence[float],
                      batch_size: int, seed: int = 0, start_batch: int = 0, rank: int = 0,
                      world_size: int = 1) -> MixedBatchSampler:
    """The sampler of multi-source prepared labels: `ratios` the per-batch shares (None: in proportion to each
    source's samples per epoch)."""
    image_source = np.array([im.source for im in labels.images], np.int64)
    sample_source = image_source[labels.samples[:, 0]] if len(labels.samples) else np.zeros(0, np.int64)
    source_samples = [np.flatnonzero(sample_source == s) for s in range(len(labels.sources))]
    names = [s.name for s in labels.sources]
    for samples, name in zip(source_samples, names):
        if not len(samples):
            raise ValueError(f"source '{name}' has no training sample")
    per_epoch = [len(samples) * factor for samples, factor in zip(source_samples, sample_ratio_factors)]
    counts = per_batch_counts(ratios if ratios is not None else per_epoch, batch_size, names)
    return MixedBatchSampler(source_samples, counts, per_epoch, seed, start_batch, rank, world_size)
