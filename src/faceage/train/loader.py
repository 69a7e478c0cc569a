"""The loader of the training loop: this epoch's rows (a permutation, or an age- and data-set-balanced draw),
each rank's share of a global batch gathered from the uint8 cache (on the GPU with ``run.gpu_cache``), JPEG
coding and augmentation with a generator seeded per batch, and ``run.prefetch`` threads preparing the next
batches meanwhile. Mixed into :class:`faceage.train.loop.Trainer`, whose state it reads."""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from faceage.data.sets import sampling_weights
from faceage.train.augment import augment, jpeg
from faceage.train.setup import batch_seed


class Batches:
    """Mixed into the Trainer: ``epoch_order``, ``draw_weights`` and the batches of one epoch (``_batches``)."""

    def _prepare_train_images(self):
        """The train images as a tensor on the device (``run.gpu_cache``), or None to gather from host memory."""
        if self._train_images is not None or not self._gpu_cache:
            return self._train_images
        images = np.asarray(self.data["train"].images)
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if images.nbytes > 0.5 * free:
                self.log(f"run.gpu_cache: the train cache ({images.nbytes / 2**30:.1f} GiB) is more than half "
                         f"the free GPU memory ({free / 2**30:.1f} GiB); keeping it in host memory")
                self._gpu_cache = False  # this run's choice; config.yaml keeps what was asked
                return None
        self._train_images = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        self._train_ages = torch.from_numpy(self.data["train"].ages).to(self.device)
        return self._train_images

    def _batch(self, perm: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """This rank's share of global batch ``step``: uint8 -> device -> augmented, normalised float; the ages;
        the teacher's logits for these rows when distilling, else None."""
        cfg, dev, info = self.cfg, self.device, self.dist
        per = self.global_batch // info.world_size
        idx = perm[step * self.global_batch + info.rank * per : step * self.global_batch + (info.rank + 1) * per]
        images = self._prepare_train_images()
        if images is not None:  # uint8 cache already on the device: gather there
            idx_dev = idx.to(dev, non_blocking=True)
            x, y = images[idx_dev], self._train_ages[idx_dev]
            if cfg.augment.jpeg > 0:  # JPEG coding runs on the host
                x = torch.from_numpy(jpeg(x.cpu().numpy(), cfg.augment, self._jpeg_gen(step))).to(dev)
        else:
            train = self.data["train"]
            x = torch.from_numpy(train.images[idx.numpy()])
            if cfg.augment.jpeg > 0:
                x = torch.from_numpy(jpeg(x.numpy(), cfg.augment, self._jpeg_gen(step)))
            y = torch.from_numpy(train.ages[idx.numpy()])
            if dev.type == "cuda" and cfg.run.pin_memory:
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        g = torch.Generator().manual_seed(batch_seed(cfg.run.seed, self.epoch, step, info.rank))
        x = augment(x.permute(0, 3, 1, 2), cfg.augment, self.record.mean, self.record.std, g)
        if cfg.run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        soft = None if self.teacher is None else self.teacher[idx].to(dev, non_blocking=True)
        return x, y, soft

    def _jpeg_gen(self, step: int) -> torch.Generator:
        return torch.Generator().manual_seed(batch_seed(self.cfg.run.seed + 7919, self.epoch, step,
                                                        self.dist.rank))

    def draw_weights(self) -> torch.Tensor | None:
        """Per-row draw probabilities under data.mix / data.age_balance; None = a plain permutation."""
        train, data = self.data["train"], self.cfg.data
        if data.mix is None and not data.age_balance:
            return None
        if getattr(self, "_weights", None) is None:
            self._weights = torch.from_numpy(sampling_weights(
                train.ages, train.datasets, data.mix, float(data.age_balance), int(data.age_bin)))
        return self._weights

    def epoch_order(self) -> torch.Tensor:
        """This epoch's rows: a permutation, or rows drawn with replacement by :meth:`draw_weights`;
        the same on every rank."""
        n, weights = len(self.data["train"].ages), self.draw_weights()
        if weights is None:
            return torch.randperm(n, generator=self.gen)
        return torch.multinomial(weights, n, replacement=True, generator=self.gen)

    def _batches(self, perm: torch.Tensor, steps: int):
        """Yield (step, x, y, teacher logits or None); with ``run.prefetch`` > 0, threads prepare the next batches meanwhile."""
        ahead = self.cfg.run.prefetch
        if ahead is None:  # on a GPU: enough CPU threads to draw the augmentation's random numbers in time
            local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
            ahead = max(2, min(8, (os.cpu_count() or 2) // local)) if self.device.type == "cuda" else 0
        ahead = int(ahead)
        if ahead <= 0:
            for step in range(steps):
                yield (step, *self._batch(perm, step))
            return

        def init():
            if self.device.type == "cuda":
                torch.cuda.set_device(self.device)

        with ThreadPoolExecutor(ahead, thread_name_prefix="faceage-batch", initializer=init) as pool:
            queue: deque = deque()
            nxt = 0
            try:
                for step in range(steps):
                    while nxt < steps and len(queue) <= ahead:
                        queue.append(pool.submit(self._batch, perm, nxt))
                        nxt += 1
                    yield (step, *queue.popleft().result())
            finally:
                for fut in queue:
                    fut.cancel()
