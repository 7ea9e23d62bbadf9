import pytest

from zeusseg.datasets import get_dataset, list_datasets, resolve_data_root
from zeusseg.errors import InputError


def test_unknown_dataset_lists_names():
    with pytest.raises(ValueError, match="visn-val"):
        get_dataset("nope")


def test_data_root_resolution(tmp_path, monkeypatch):
    monkeypatch.setenv("ZEUSSEG_DATA_ROOT", str(tmp_path))
    assert resolve_data_root() == tmp_path
    assert resolve_data_root(tmp_path) == tmp_path
    monkeypatch.setenv("ZEUSSEG_DATA_ROOT", str(tmp_path / "missing"))
    with pytest.raises(InputError, match="ZEUSSEG_DATA_ROOT"):
        resolve_data_root()


@pytest.mark.data
def test_visn_split_matches_readme(data_root):
    val = get_dataset("visn-val", data_root)
    train = get_dataset("visn-train", data_root)
    assert len(val) == 32 and len(train) == 224
    assert val.names[:3] == ["0008", "0016", "0024"] and not set(val.names) & set(train.names)
    counts = {1: 0, 2: 0, 3: 0}
    for s in val:
        for c in s.masks.class_ids:
            counts[int(c)] += 1
    assert counts == {1: 117, 2: 14, 3: 24}  # RSV, SARS-CoV-2, FLUAV per the data README


@pytest.mark.data
def test_label_datasets(data_root):
    assert {n: len(get_dataset(n, data_root)) for n in list_datasets() if "visn" not in n} == {
        "coelho-nih3t3": 49,
        "coelho-u2os": 48,
        "dsb-train": 487,
        "dsb-val": 54,
    }
    s = get_dataset("dsb-val", data_root)[0]
    assert s.name == "dsb-0010" and len(s.masks) > 0 and s.masks.class_names == {1: "cell nuclei"}
