"""The data layer: the dataset registry (Market-1501, DukeMTMC-reID, MSMT17, CUHK03-NP, a
user's folder), a synthetic dataset in each layout, the decoded-image cache, batched
augmentation and deterministic samplers.

Example::

    >>> from reid.data import (Market1501, split_train_val, load_image_cache, resize_images,
    ...                        BatchAugment, batch_generator, RandomBatchSampler)
    >>> ds = Market1501("data")
    >>> split = split_train_val(ds.train, val_per_id=1, seed=0)
    >>> cache = load_image_cache([s.path for s in split.train], cache_dir="data/.cache", desc="train")
    >>> aug = BatchAugment((256, 128), erasing_p=0.5)
    >>> for step, idx in enumerate(RandomBatchSampler(len(cache), 64, seed=0).batches(epoch)):
    ...     x = aug(cache[idx].to(device), batch_generator(0, epoch, step))
"""

from .augment import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    BatchAugment,
    batch_generator,
    eval_transform,
    normalize,
    resize_images,
)
from .cache import decode_image, load_image_cache
from .market1501 import (
    DATASETS,
    Market1501,
    NameScheme,
    ReidDataset,
    Sample,
    TrainValSplit,
    count_samples,
    parse_market_name,
    read_split,
    split_train_val,
)
from .datasets import CUHK03, MSMT17, DukeMTMC, FolderDataset
from .samplers import PKSampler, RandomBatchSampler, SequentialBatchSampler, Share, shard, shard_bounds

__all__ = [
    "IMAGENET_MEAN", "IMAGENET_STD", "BatchAugment", "batch_generator", "eval_transform",
    "normalize", "resize_images", "decode_image", "load_image_cache", "DATASETS", "Market1501", "Sample",
    "NameScheme", "ReidDataset", "DukeMTMC", "MSMT17", "CUHK03", "FolderDataset",
    "TrainValSplit", "count_samples", "parse_market_name", "read_split", "split_train_val", "PKSampler",
    "RandomBatchSampler", "SequentialBatchSampler", "Share", "shard", "shard_bounds",
]
