"""Image data: Parquet (HF encoding), image folders, synthetic images, code caches, the DataModule."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from dgnam.errors import DgnamError
from dgnam.generator.cache import CachedCodes
from dgnam.generator.data import (
    FolderImages,
    ImageDataset,
    ParquetImages,
    SyntheticImages,
    center_square,
    collate,
    decode_image,
    open_source,
    pil_to_tensor,
)
from dgnam.generator.datamodule import ImageDataModule
from dgnam.generator.encoder import Comparator, Encoder

SHARED = Path(os.environ.get("DGNAM_SHARED", Path(__file__).resolve().parents[2] / "shared"))
DATA = SHARED / "data" / "imagenet50-128"


def _jpeg(color=(200, 30, 30), mode="RGB", size=(40, 30), fmt="JPEG") -> bytes:
    img = Image.new("RGB", size, color)
    if mode == "L":
        img = img.convert("L")
    elif mode == "CMYK":
        img = img.convert("CMYK")
    elif mode == "RGBA":
        img = img.convert("RGBA")
        img.putalpha(128)
        fmt = "PNG"
    elif mode == "P":
        img = img.convert("P")
        fmt = "PNG"
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _parquet(path: Path, blobs: list[bytes | None], labels: list[int], row_group_size: int = 3) -> Path:
    images = pa.array([{"bytes": b, "path": f"img{i}.jpg"} for i, b in enumerate(blobs)],
                      type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
    tab = pa.table({"image": images, "label": pa.array(labels, pa.int64())})
    pq.write_table(tab, path, row_group_size=row_group_size)
    return path


@pytest.fixture
def shards(tmp_path):
    a = [_jpeg(), _jpeg(mode="L"), _jpeg(mode="CMYK"), _jpeg(mode="RGBA"), b"\xff\xd8 corrupt jpeg"]
    b = [_jpeg((0, 0, 255)), _jpeg(mode="P")]
    _parquet(tmp_path / "train-00000-of-00002.parquet", a, [0, 1, 2, 3, 4])
    _parquet(tmp_path / "train-00001-of-00002.parquet", b, [5, 6])
    return tmp_path


def test_decode_converts_every_mode_to_rgb():
    for mode in ("RGB", "L", "CMYK", "RGBA", "P"):
        img = decode_image(_jpeg(mode=mode))
        assert img is not None and img.mode == "RGB", mode
    assert decode_image(b"garbage") is None
    rgba = decode_image(_jpeg((0, 0, 0), mode="RGBA"))  # half-transparent black on white -> grey
    assert 100 < np.asarray(rgba)[0, 0, 0] < 160


def test_parquet_glob_of_shards_and_corrupt_rows_are_counted(shards):
    src = ParquetImages(str(shards / "train-*.parquet"))
    assert len(src) == 7 and len(src.files) == 2
    ds = ImageDataset(src, resolution=16, train=True)
    items = [ds[i] for i in range(len(ds))]
    assert sum(it is None for it in items) == 1  # the corrupt row
    good = [it for it in items if it is not None]
    assert all(it["image"].shape == (3, 16, 16) for it in good)
    assert all(0 <= it["image"].min() and it["image"].max() <= 1 for it in good)
    assert [it["label"] for it in good] == [0, 1, 2, 3, 5, 6]
    batch = collate(items)
    assert batch["image"].shape == (6, 3, 16, 16) and int(batch["skipped"]) == 1
    assert len(ParquetImages(str(shards), limit=3)) == 3  # a directory of shards works too


def test_parquet_errors(tmp_path):
    with pytest.raises(DgnamError, match="nothing matches"):
        ParquetImages(str(tmp_path / "none-*.parquet"))
    pq.write_table(pa.table({"pixels": [1, 2]}), tmp_path / "x.parquet")
    with pytest.raises(DgnamError, match="no column 'image'"):
        ParquetImages(str(tmp_path / "x.parquet"))


def test_image_folder_imagenet_layout(tmp_path):
    for c, color in (("n01", (255, 0, 0)), ("n02", (0, 255, 0))):
        (tmp_path / c).mkdir()
        for i in range(2):
            (tmp_path / c / f"{i}.jpg").write_bytes(_jpeg(color))
    (tmp_path / "n02" / "bad.jpg").write_bytes(b"not an image")
    src = FolderImages(tmp_path)
    assert src.classes == ["n01", "n02"] and len(src) == 5
    ds = ImageDataset(src, resolution=8)
    items = [ds[i] for i in range(len(ds))]
    assert sum(it is None for it in items) == 1
    red = items[0]["image"]
    assert red[0].mean() > 0.9 and red[1].mean() < 0.1
    assert isinstance(open_source(str(tmp_path)), FolderImages)
    with pytest.raises(DgnamError, match="not found"):
        FolderImages(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DgnamError, match="holds no images"):
        FolderImages(tmp_path / "empty")


def test_train_transform_crops_flips_and_resizes():
    img = Image.new("RGB", (64, 48))
    img.paste((255, 255, 255), (0, 0, 32, 48))  # left half white
    buf = io.BytesIO()
    img.save(buf, format="PNG")

    class One:
        def __len__(self):
            return 1

        def raw(self, i):
            return buf.getvalue(), 0

    np.random.seed(0)
    ds = ImageDataset(One(), resolution=24, train=True, crop_scale=(1.0, 1.0), flip=True)
    lefts = {round(float(ds[0]["image"][0, :, :4].mean()), 1) for _ in range(20)}
    assert lefts == {0.0, 1.0}  # both orientations occur
    assert ds[0]["image"].shape == (3, 24, 24)
    ev = ImageDataset(One(), resolution=24, train=False)
    assert torch.equal(ev[0]["image"], ev[0]["image"])  # evaluation is deterministic


def test_synthetic_images_are_deterministic():
    a, b = SyntheticImages(4, 32, seed=3), SyntheticImages(4, 32, seed=3)
    assert torch.equal(a[2]["image"], b[2]["image"]) and not torch.equal(a[1]["image"], a[2]["image"])
    assert a[0]["image"].shape == (3, 32, 32)


def test_cache_holds_codes_of_images_and_of_their_mirrors(tiny_target, shards, tmp_path):
    enc = Encoder(tiny_target, "fc1", input_size=32)
    comp = Comparator(tiny_target, "conv2", input_size=16)
    dm = ImageDataModule(train=str(shards / "train-*.parquet"), val=None, resolution=16, batch_size=4, cache=True,
                         cache_dir=str(tmp_path / "cache"), load_size=32).attach(enc, comp)
    dm.setup("fit")
    ds = dm.train_set
    assert isinstance(ds, CachedCodes) and len(ds) == 6 and ds.views == 2  # corrupt row skipped
    x = ds.images.float() / 255
    src = ParquetImages(str(shards / "train-*.parquet"))
    big = torch.stack([pil_to_tensor(center_square(decode_image(src.raw(i)[0]), 32)) for i in (0, 1, 2, 3, 5, 6)])
    with torch.no_grad():
        assert ds.codes.shape == (6, 2, enc.code_dim) and ds.feats.shape[:2] == (6, 2)
        assert torch.allclose(ds.codes[:, 0].float(), enc(big), atol=0.02)
        assert torch.allclose(ds.codes[:, 1].float(), enc(big.flip(-1)), atol=0.02)
        assert torch.allclose(ds.feats[:, 0].float(), comp(x), atol=0.05)
        assert torch.allclose(ds.feats[:, 1].float(), comp(x.flip(-1)), atol=0.05)
    codes = torch.stack([torch.zeros(6, 3), torch.ones(6, 3)], 1)  # view 0: zeros, view 1: ones
    imgs = torch.zeros(6, 3, 4, 4, dtype=torch.uint8)
    imgs[..., :2] = 255  # left half white
    two = CachedCodes({"images": imgs, "codes": codes, "labels": ds.labels}, train=True)
    draws = [two[0] for _ in range(40)]
    assert {float(d["code"][0]) for d in draws} == {0.0, 1.0}  # training draws both views
    assert all(float(d["image"][0, 0, 0]) == 1 - float(d["code"][0]) for d in draws)  # view 1 is mirrored
    assert float(CachedCodes({"images": imgs, "codes": codes, "labels": ds.labels})[0]["code"][0]) == 0.0
    assert list((tmp_path / "cache").glob("codes-*.pt"))  # stored, and reused on the next setup
    dm2 = ImageDataModule(train=str(shards / "train-*.parquet"), resolution=16, cache=True,
                          cache_dir=str(tmp_path / "cache"), load_size=32).attach(None, None)
    with pytest.raises(DgnamError, match="needs the encoder"):
        dm2.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) >= {"image", "code", "feat", "label", "skipped"}


def test_datamodule_checks_paths(tmp_path):
    with pytest.raises(DgnamError, match="data path not found"):
        ImageDataModule(train=str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DgnamError, match="is empty"):
        ImageDataModule(train=str(tmp_path / "empty"))
    dm = ImageDataModule(train="synthetic", val="synthetic", resolution=32, batch_size=4, synthetic_size=8)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["image"].shape == (4, 3, 32, 32)


def test_reads_the_shared_imagenet50_shards():
    if not DATA.is_dir():
        pytest.skip(f"shared data {DATA} not found (set DGNAM_SHARED)")
    src = ParquetImages(str(DATA / "valid-*.parquet"), limit=5)
    ds = ImageDataset(src, resolution=64)
    items = [ds[i] for i in range(5)]
    assert all(it is not None and it["image"].shape == (3, 64, 64) for it in items)
    assert all(0 <= it["label"] < 1000 for it in items)
