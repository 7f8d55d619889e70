"""What a training run needs of its dataset, checked before Ray starts (no Ray)."""

from __future__ import annotations

from msa_model.config import DataConfig
from msa_model.data import DatasetError, check_data

__all__ = ["MIN_RANKED_IMAGES", "check_run_data"]

MIN_RANKED_IMAGES = 2  # one image ranks first whatever the model: val mR 100


def check_run_data(data: DataConfig, require_test: bool = False) -> None:
    """:func:`~msa_model.data.check_data`, plus splits a run can learn from and be judged on.

    Raises:
        DatasetError: No training image, or a validation (or required test) split of fewer
            than :data:`MIN_RANKED_IMAGES` images, whose retrieval metrics mean nothing.
    """
    report = check_data(data, require_test=require_test)
    if "train" not in report.splits:
        raise DatasetError(
            f"{data.json}: no training images (the splits: {', '.join(report.splits) or 'none'})"
        )
    for split in ("val", "test") if require_test else ("val",):
        images = report.splits[split].images if split in report.splits else 0
        if images < MIN_RANKED_IMAGES:
            raise DatasetError(
                f"{data.json}: the {split} split has {images} image(s): retrieval among fewer "
                f"than {MIN_RANKED_IMAGES} ranks every query right (mR 100) and means nothing; "
                f"add images to it" + (" or raise data.val_fraction" if split == "val" else "")
            )
