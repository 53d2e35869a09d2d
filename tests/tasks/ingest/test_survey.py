"""`semilabel init`'s survey: what it finds in a folder or a manifest, and what it
chooses from that."""

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from tasks.ingest import DataContractError
from tasks.ingest.survey import choose, survey
from tests.conftest import COLOUR_CLASSES, colour_folder, colour_image, digit_png, write


def test_a_folder_of_colour_photos_with_named_classes(tmp_path: Path):
    folder = colour_folder(tmp_path / "my photos", n=60, n_labeled=30)
    found = survey(folder)
    assert found.kind == "image_folder" and found.records == 62
    # 10 JPEGs a class, plus the grayscale PNG (left bar) and the RGBA PNG (middle bar)
    assert found.per_class == {"left bar": 11, "middle bar": 11, "right bar": 10}
    assert tuple(found.per_class) == tuple(sorted(COLOUR_CLASSES))
    assert found.unlabeled == 30
    assert found.modes == {"RGB": 60, "L": 1, "RGBA": 1}
    assert found.colour
    assert min(found.short_sides) >= 32 and max(found.long_sides) <= 121

    choices = choose(found, gpu=False)
    assert choices.classes == ("left bar", "middle bar", "right bar")  # sorted, stable
    assert choices.channels == 3 and choices.network == "small_cnn"
    assert choices.image_size == 32  # capped: no GPU
    assert choices.name == "my-photos"
    # 62 images, 3 classes: the gold fraction leaves >= 8 gold test images a class
    assert choices.gold_fraction == 0.5
    # 10 labels in the smallest class, 2 of them in gold test: ask for the rest
    assert choices.gold_budget == 12 and "asks annotators for 12 gold labels" in choices.gold_why
    # the bars come in random colours: colour does not tell the classes apart
    assert found.colour_checked == 32 and found.colour_share is not None
    assert found.colour_share < 0.2 and found.colour_p is not None and found.colour_p > 0.01
    assert choices.colour == "invariant" and "does not tell the classes apart" in choices.colour_why


def test_grayscale_stored_as_rgb_reads_as_grayscale(tmp_path: Path):
    import io

    from PIL import Image

    for i in range(12):
        grey = Image.open(io.BytesIO(digit_png(i % 2, i))).convert("RGB")
        buf = io.BytesIO()
        grey.resize((100, 80)).save(buf, "JPEG")
        write(tmp_path / "scans" / ("a", "b")[i % 2] / f"{i}.jpg", buf.getvalue())
    found = survey(tmp_path / "scans")
    assert found.modes == {"RGB": 12} and found.gray_in_rgb == 12
    choices = choose(found, gpu=True)
    assert choices.channels == 1 and "grayscale" in choices.channels_why
    assert choices.colour == "keep"
    assert choices.image_size == 64 and choices.network == "small_cnn"  # 80 px: 64 fits


def test_image_size_is_capped_without_a_gpu(tmp_path: Path):
    for i in range(6):
        write(tmp_path / "big" / ("a", "b")[i % 2] / f"{i}.png", _png(300, 240))
    found = survey(tmp_path / "big")
    assert choose(found, gpu=True).image_size == 224
    assert choose(found, gpu=True).network == "resnet18"
    cpu = choose(found, gpu=False)
    assert cpu.image_size == 32 and "no GPU" in cpu.image_size_why


def test_classes_that_have_their_own_colour_keep_it(tmp_path: Path):
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    hues = {"ripe": (200, 40, 30), "unripe": (60, 170, 40), "rotten": (90, 60, 30)}
    for i in range(30):
        name = list(hues)[i % 3]
        base = np.array(hues[name]) + rng.integers(-30, 31, 3)  # each photo a little off
        pixels = np.clip(base + rng.normal(0, 20, (48, 48, 3)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels, "RGB").save(buf, "JPEG")
        write(tmp_path / "fruit" / name / f"{i}.jpg", buf.getvalue())
    found = survey(tmp_path / "fruit")
    assert found.colour_share is not None and found.colour_share > 0.8
    assert found.colour_p is not None and found.colour_p < 0.01
    choices = choose(found, gpu=False)
    assert choices.colour == "keep" and "colour tells the classes apart" in choices.colour_why


def test_too_few_labeled_images_keep_colour_and_say_so(tmp_path: Path):
    folder = colour_folder(tmp_path / "few", n=30, n_labeled=4)  # 2, 1, 1 JPEGs + 2 PNGs
    found = survey(folder)
    assert found.colour_share is None
    choices = choose(found, gpu=False)
    assert choices.colour == "keep" and "too few labeled colour images" in choices.colour_why


def _png(w: int, h: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (w, h), (200, 30, 30)).save(buf, "PNG")
    return buf.getvalue()


def test_a_manifest_with_a_label_column(tmp_path: Path):
    paths, labels = [], []
    for i in range(20):
        rel = f"img/{i}.jpg"
        write(tmp_path / "m" / rel, colour_image(i % 2, i))
        paths.append(rel)
        labels.append(("dog", "cat")[i % 2] if i < 8 else "")
    pacsv.write_csv(pa.table({"file": paths, "kind": labels}), tmp_path / "m" / "list.csv")
    found = survey(tmp_path / "m" / "list.csv", path_column="file", label_column="kind")
    assert found.kind == "manifest"
    assert (found.per_class, found.unlabeled) == ({"cat": 4, "dog": 4}, 12)
    choices = choose(found, gpu=False, name="pets")
    assert choices.classes == ("cat", "dog") and choices.name == "pets"


def test_what_cannot_be_a_classifier_is_said_plainly(tmp_path: Path):
    write(tmp_path / "one" / "only" / "a.png", digit_png(0, 1))
    write(tmp_path / "one" / "unlabeled" / "b.png", digit_png(1, 2))
    with pytest.raises(DataContractError, match=r"needs at least 2: put each class"):
        choose(survey(tmp_path / "one"), gpu=False)
    with pytest.raises(DataContractError, match="does not exist"):
        survey(tmp_path / "nowhere")
    write(tmp_path / "notes.txt", b"hello")
    with pytest.raises(DataContractError, match="neither a folder of images nor a manifest"):
        survey(tmp_path / "notes.txt")
