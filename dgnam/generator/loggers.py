"""Loggers for generator training: Lightning's CSV logger, keeping what a resumed run logged before."""

from __future__ import annotations

import csv
from typing import Any

from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

from dgnam.errors import DgnamError


class _AppendingWriter(ExperimentWriter):
    """An experiment writer that appends to an existing ``metrics.csv`` (its header becomes the
    starting set of keys) where Lightning's deletes it."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            self.metrics_keys = sorted(k for k in header if k)


class CSVLogger(_LightningCSVLogger):
    """Lightning's ``CSVLogger``, except that resuming into the same run directory (``ckpt_path``
    with the same ``hydra.run.dir``) keeps every row already in ``csv/metrics.csv`` and appends."""

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment

    def save(self) -> None:
        try:
            super().save()
        except OSError as e:
            raise DgnamError(f"cannot write the training log {self.log_dir}/metrics.csv: {e.strerror or e} "
                             f"(disk full?)") from None
