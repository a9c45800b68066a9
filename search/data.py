"""Data modules built from `conf/data/`; each knows its image shape and class count before loading.

Nothing is downloaded: a missing data set is a `ConfigError` naming where it was looked for.
"""

from __future__ import annotations

import math
import os
import pickle
from collections.abc import Iterator
from pathlib import Path

import lightning.pytorch as pl
import torch
from lightning.pytorch.accelerators import CUDAAccelerator
from torch.utils.data import DataLoader, Dataset

from search.config import check_count
from search.errors import ConfigError

Split = tuple[torch.Tensor, torch.Tensor]
DIGITS_SAMPLES = 1797  # scikit-learn's bundled digits


def digits_train_size(val_fraction: float, test_fraction: float) -> int:
    """Samples in the digits' training split: scikit-learn's train_test_split holds out ceil(fraction * n)."""
    return DIGITS_SAMPLES - math.ceil((val_fraction + test_fraction) * DIGITS_SAMPLES)


def check_batch_fits(batch_size: int, train_size: int) -> None:
    """A ConfigError unless the training split holds one whole batch (the last partial batch is dropped)."""
    if batch_size > train_size:
        raise ConfigError(f"data.batch_size={batch_size}: larger than the training split ({train_size} samples)")


class TensorBatches:
    """Shuffled (images, labels) batches sliced from tensors in memory, sharded across DDP ranks.

    Replaces a DataLoader for data sets that fit in memory: collating tiny samples one by one
    costs more than training a small network on them.
    """

    def __init__(self, split: Split, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0, world: int = 1):
        self.images, self.labels = split
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.rank, self.world = rank, world
        self.epoch = 0
        self.drop_last = shuffle  # a training batch of one sample breaks batch norm

    def _indices(self) -> torch.Tensor:
        n = len(self.labels)
        if not self.shuffle:
            return torch.arange(n)[self.rank :: self.world]
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return torch.randperm(n, generator=generator)[self.rank :: self.world]

    def __len__(self) -> int:
        n = len(range(self.rank, len(self.labels), self.world))
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[Split]:
        indices = self._indices()
        self.epoch += 1
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            batch = indices[start : start + self.batch_size]
            yield self.images[batch], self.labels[batch]


class InMemoryDataModule(pl.LightningDataModule):
    """Base for data sets held as tensors: subclasses fill `self.splits` in `load()`."""

    def __init__(self, batch_size: int, in_channels: int, num_classes: int, resolution: int, seed: int = 0):
        super().__init__()
        check_count("data.batch_size", batch_size, 1)
        self.batch_size, self.seed = batch_size, seed
        self.in_channels, self.num_classes, self.resolution = in_channels, num_classes, resolution
        self.splits: dict[str, Split] = {}

    def load(self) -> dict[str, Split]:
        """The train, val and test splits as (N, C, H, W) float images and (N,) int64 labels."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.splits = self.load()

    def _batches(self, split: str) -> TensorBatches:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        shuffle = split == "train"
        return TensorBatches(
            self.splits[split], self.batch_size, shuffle=shuffle, seed=self.seed, rank=rank, world=world
        )

    def transfer_batch_to_device(self, batch: Split, device: torch.device, dataloader_idx: int) -> Split:
        # Lightning's default walks any nested collection; these batches are always one pair,
        # and on the small networks they feed the walk is a measurable part of a step.
        images, labels = batch
        return images.to(device, non_blocking=True), labels.to(device, non_blocking=True)

    def train_dataloader(self) -> TensorBatches:
        return self._batches("train")

    def val_dataloader(self) -> TensorBatches:
        return self._batches("val")

    def test_dataloader(self) -> TensorBatches:
        return self._batches("test")


class DigitsDataModule(InMemoryDataModule):
    """scikit-learn's 8x8 handwritten digits, 1 channel, 10 classes; a fixed stratified split."""

    def __init__(
        self, batch_size: int = 64, val_fraction: float = 0.15, test_fraction: float = 0.15, split_seed: int = 0
    ):
        super().__init__(batch_size, in_channels=1, num_classes=10, resolution=8, seed=split_seed)
        if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
            raise ConfigError(
                f"data.val_fraction={val_fraction}, data.test_fraction={test_fraction}: "
                "expected fractions in (0, 1) that sum to less than 1"
            )
        self.val_fraction, self.test_fraction = val_fraction, test_fraction
        check_batch_fits(batch_size, digits_train_size(val_fraction, test_fraction))

    def load(self) -> dict[str, Split]:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        images, labels = load_digits(return_X_y=True)
        held_out = self.val_fraction + self.test_fraction
        x_train, x_rest, y_train, y_rest = train_test_split(
            images, labels, test_size=held_out, stratify=labels, random_state=self.seed
        )
        x_val, x_test, y_val, y_test = train_test_split(
            x_rest, y_rest, test_size=self.test_fraction / held_out, stratify=y_rest, random_state=self.seed
        )
        mean, std = x_train.mean(), x_train.std()
        return {
            name: (torch.tensor((x - mean) / std, dtype=torch.float32).view(-1, 1, 8, 8), torch.tensor(y))
            for name, x, y in [("train", x_train, y_train), ("val", x_val, y_val), ("test", x_test, y_test)]
        }


class FakeDataModule(InMemoryDataModule):
    """torchvision's FakeData, generated once and held in memory (for benchmarks)."""

    def __init__(
        self, size: int = 2048, resolution: int = 32, in_channels: int = 3, classes: int = 10, batch_size: int = 128
    ):
        super().__init__(batch_size, in_channels=in_channels, num_classes=classes, resolution=resolution)
        check_count("data.size", size, 4, " (val and test hold a quarter each)")
        check_batch_fits(batch_size, size)
        self.size = size

    def load(self) -> dict[str, Split]:
        from torchvision.datasets import FakeData
        from torchvision.transforms import v2

        shape = (self.in_channels, self.resolution, self.resolution)
        to_tensor = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
        splits = {}
        for offset, (name, size) in enumerate(
            [("train", self.size), ("val", self.size // 4), ("test", self.size // 4)]
        ):
            data = FakeData(size, shape, self.num_classes, transform=to_tensor, random_offset=offset * self.size)
            images = torch.stack([data[i][0] for i in range(size)])
            labels = torch.tensor([int(data[i][1]) for i in range(size)])
            splits[name] = (images, labels)
        return splits


def _existing_root(root: str | None, expected: str) -> Path:
    if root is None or str(root) == "???":
        raise ConfigError(f"data.root is missing: set data.root=DIR, the folder holding {expected}")
    path = Path(str(root)).expanduser()
    if not path.is_dir():
        raise ConfigError(f"data.root={root}: no such folder (looked for {expected} in {path.resolve()})")
    return path


MAX_AUTO_WORKERS = 8


def worker_count(num_workers: int | str) -> int:
    """DataLoader worker processes: `num_workers`, or for "auto" one per CPU this process may use, at most 8
    (more than the CPUs makes torch warn, and on small machines slows loading down)."""
    if num_workers == "auto":
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        return min(MAX_AUTO_WORKERS, cpus)
    return check_count("data.num_workers", num_workers, 0, " or auto (0 loads in the main process)")


class LoaderDataModule(pl.LightningDataModule):
    """Base for file-backed data sets read through torch DataLoaders with workers."""

    def __init__(self, batch_size: int, num_workers: int | str):
        super().__init__()
        check_count("data.batch_size", batch_size, 1)
        self.batch_size, self.num_workers = batch_size, worker_count(num_workers)
        self.datasets: dict[str, Dataset] = {}

    def load(self) -> dict[str, Dataset]:
        """The train, val and test data sets, read from disk."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.datasets:
            datasets = self.load()
            check_batch_fits(self.batch_size, len(datasets["train"]))
            self.datasets = datasets

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            shuffle=split == "train",
            drop_last=split == "train",
            num_workers=self.num_workers,
            pin_memory=self._trains_on_cuda(),
            persistent_workers=self.num_workers > 0,
        )

    def _trains_on_cuda(self) -> bool:
        # Page-locked batches speed up copies to a CUDA device only; elsewhere torch warns that pinning is moot.
        return self.trainer is not None and isinstance(self.trainer.accelerator, CUDAAccelerator)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")


CIFAR_FILES = {  # classes: (folder, train files, test files) of the python version
    10: ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]),
    100: ("cifar-100-python", ["train"], ["test"]),
}
CIFAR_MEAN_STD = ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))


def read_cifar(folder: Path, files: list[str]) -> Split:
    """Images (N, 3, 32, 32) uint8 and labels (N,) from CIFAR's pickled python batches.

    Read here rather than by torchvision's CIFAR classes, which refuse any copy whose MD5 differs
    from the published archive's (re-packed copies, the tests' small ones).
    """
    images, labels = [], []
    for name in files:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images.append(torch.from_numpy(batch["data"]).view(-1, 3, 32, 32))
        labels += batch["labels"] if "labels" in batch else batch["fine_labels"]
    return torch.cat(images), torch.tensor(labels)


class TransformedTensors(Dataset):
    """(image, label) pairs from uint8 tensors, with a per-sample torchvision transform."""

    def __init__(self, split: Split, transform):
        self.images, self.labels = split
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.transform(self.images[index]), self.labels[index]


class CIFARDataModule(LoaderDataModule):
    """CIFAR-10/100 in torchvision's python format; train split into train/val, test set as test."""

    def __init__(
        self,
        root: str | None = None,
        classes: int = 10,
        batch_size: int = 128,
        val_size: int = 5000,
        split_seed: int = 0,
        num_workers: int | str = "auto",
    ):
        super().__init__(batch_size, num_workers)
        if classes not in CIFAR_FILES:
            raise ConfigError(f"data.classes={classes}: allowed: 10, 100")
        folder, train_files, test_files = CIFAR_FILES[classes]
        self.folder = _existing_root(root, f"{folder}/") / folder
        missing = [name for name in train_files + test_files if not (self.folder / name).is_file()]
        if missing:
            raise ConfigError(
                f"data.root={root}: no CIFAR-{classes} found (looked for {self.folder.resolve() / missing[0]})"
            )
        self.files = (train_files, test_files)
        self.val_size, self.split_seed = val_size, split_seed
        self.in_channels, self.num_classes, self.resolution = 3, classes, 32

    def load(self) -> dict[str, Dataset]:
        from torchvision.transforms import v2

        normalize = [v2.ToDtype(torch.float32, scale=True), v2.Normalize(*CIFAR_MEAN_STD)]
        augment = v2.Compose([v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(), *normalize])
        plain = v2.Compose(normalize)
        images, labels = read_cifar(self.folder, self.files[0])
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.split_seed))
        val, train = order[: min(self.val_size, len(order) // 2)], order[min(self.val_size, len(order) // 2) :]
        return {
            "train": TransformedTensors((images[train], labels[train]), augment),
            "val": TransformedTensors((images[val], labels[val]), plain),
            "test": TransformedTensors(read_cifar(self.folder, self.files[1]), plain),
        }


class ImageFolderDataModule(LoaderDataModule):
    """ImageNet-style folders: root/train, root/val and optionally root/test (else val serves as test)."""

    def __init__(
        self, root: str | None = None, resolution: int = 224, batch_size: int = 256, num_workers: int | str = "auto"
    ):
        super().__init__(batch_size, num_workers)
        self.root = _existing_root(root, "train/ and val/ class folders")
        for split in ("train", "val"):
            if not (self.root / split).is_dir():
                raise ConfigError(f"data.root={root}: no {split}/ folder (looked in {self.root.resolve()})")
        self.in_channels, self.resolution = 3, resolution
        self.num_classes = sum(1 for p in (self.root / "train").iterdir() if p.is_dir())
        if self.num_classes < 2:
            raise ConfigError(f"data.root={root}: train/ holds {self.num_classes} class folders; expected 2 or more")

    def load(self) -> dict[str, Dataset]:
        from torchvision import datasets
        from torchvision.transforms import v2

        normalize = [
            v2.ToImage(),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
        augment = v2.Compose([v2.RandomResizedCrop(self.resolution), v2.RandomHorizontalFlip(), *normalize])
        plain = v2.Compose([v2.Resize(self.resolution * 8 // 7), v2.CenterCrop(self.resolution), *normalize])
        test_folder = "test" if (self.root / "test").is_dir() else "val"
        return {
            "train": datasets.ImageFolder(str(self.root / "train"), augment),
            "val": datasets.ImageFolder(str(self.root / "val"), plain),
            "test": datasets.ImageFolder(str(self.root / test_folder), plain),
        }
