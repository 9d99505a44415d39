"""Berlin V2X token records: .bin reader, record texts, tokenizer, table and synthetic writers."""
import csv
import json
import os

import numpy as np
import pytest
import torch

import datasets
import datasets.v2x as v2x
import datasets.v2x_synthetic as synthetic
from datasets.v2x import V2XTokens, num_clients
from datasets.v2x_tokenizer import V2XTokenizer, build_v2x, parse_record, record_text

ROW = {"time": "0735", "protocol": "udp", "direction": "uplink", "street": "a100_nord",
       "rsrp": "-95.2", "snr": "7", "datarate": "0.25"}
TEXT = ("time = 0 7 3 5 --> protocol = udp --> direction = uplink --> street = a100_nord --> "
        "rsrp = - 9 5 . 2 --> snr = 7 --> datarate = 0 . 2 5")


def write_bins(root, split, streams):
    os.makedirs(root / split, exist_ok=True)
    for name, tokens in streams.items():
        np.asarray(tokens, dtype=np.uint8).tofile(root / split / f"{name}.bin")


@pytest.fixture(scope="module")
def texts():
    rows = synthetic.synthetic_records("avenue", 150) + synthetic.synthetic_records("tunnel", 150)
    return [record_text(r) for r in rows]


@pytest.fixture(scope="module")
def trained(texts, tmp_path_factory):
    prefix = str(tmp_path_factory.mktemp("spm") / "tok")
    return V2XTokenizer.train(texts, prefix), prefix + ".model"


# ----------------------------------------------------------------------------- reader

def test_reader_splits_pads_cuts_and_shifts(tmp_path):
    write_bins(tmp_path, "train", {"b": [17, 5, 6, 17, 7, 8, 9, 10, 11, 12], "a": [3, 17, 4]})
    write_bins(tmp_path, "test", {"b": [17, 1], "a": [17, 2]})
    assert num_clients(str(tmp_path)) == 2
    data = V2XTokens(str(tmp_path), max_seq_len=5)
    assert data.clients == ["a", "b"] and len(data) == 4 and data.split_token == 17
    assert data.client_of.tolist() == [0, 0, 1, 1]
    rows = [torch.cat([x, y[-1:]]).tolist() for x, y in data]
    pad = datasets.IGNORED_TARGET    # padding targets are ignored, padding inputs are 0
    assert rows == [[3, 0, 0, 0, pad], [17, 4, 0, 0, pad], [17, 5, 6, 0, pad], [17, 7, 8, 9, 10]]
    assert data[1][1].tolist() == [4, pad, pad, pad]
    x, y = data[3]
    assert x.dtype == torch.long and x.tolist() == [17, 7, 8, 9] and y.tolist() == [7, 8, 9, 10]
    one = V2XTokens(str(tmp_path), client=1, max_seq_len=5)
    assert one.clients == ["b"] and len(one) == 2
    test = datasets.create_dataset("v2x", root=str(tmp_path), split="val", max_seq_len=4)
    assert [x.tolist() for x, _ in test] == [[17, 2, 0], [17, 1, 0]]
    with pytest.raises(ValueError, match="holds 2 clients"):
        V2XTokens(str(tmp_path), client=2)


def test_reader_takes_the_split_token_from_meta(tmp_path):
    write_bins(tmp_path, "train", {"c": [2, 9, 9, 2, 8]})
    (tmp_path / "meta.json").write_text(json.dumps({"split_token": 2}))
    assert len(V2XTokens(str(tmp_path))) == 2
    assert len(V2XTokens(str(tmp_path), split_token=8)) == 2  # [2 9 9 2] and [8]


def test_missing_data_says_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as err:
        V2XTokens(str(tmp_path / "nowhere"))
    message = str(err.value)
    assert os.path.join(str(tmp_path / "nowhere"), "train", "*.bin") in message
    assert "build_v2x" in message and "write_synthetic_v2x" in message
    with pytest.raises(ValueError, match="no transform"):
        datasets.create_dataset("v2x", root=str(tmp_path), transform=lambda x: x)


def test_registry_entry():
    info = datasets.dataset_info("berlin-v2x")
    assert (info.name, info.task, info.num_classes, info.in_chans, info.image_size) == \
        ("v2x", "language_modeling", 237, 0, 0)
    assert info.default_root.endswith("v2x_synthetic")


# ----------------------------------------------------------------------------- record texts

def test_record_text_and_parse_record():
    assert record_text(ROW) == TEXT
    assert parse_record(TEXT) == ROW
    assert parse_record(TEXT + " --> ping_ms = 4") == {**ROW, "ping_ms": "4"}
    assert parse_record("time = 1 2 0 0 --> rsrp") == {"time": "1200"}  # truncated generation
    with pytest.raises(ValueError, match="HHMM"):
        record_text({"time": "7:35"})
    with pytest.raises(ValueError, match="one word"):
        record_text({"time": "0735", "street": "a 100"})
    with pytest.raises(ValueError, match="without 'time'"):
        record_text({"time": "0735", "downtime": "3"})


def test_tokenizer_round_trip_and_pieces(texts, trained):
    tokenizer, path = trained
    assert tokenizer.vocab_size <= 237 and tokenizer.pad_id == 0
    assert tokenizer.separator == " -->"
    for text in texts[::10] + [TEXT]:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
        assert ids[0] == tokenizer.time_id and ids.count(tokenizer.time_id) == 1
        assert ids.count(tokenizer.separator_id) == text.count(" --> ")
    assert len(tokenizer.encode("time = 1 2 3 4")) == 6  # time, " =", one piece per digit
    assert V2XTokenizer.load(path).encode(TEXT) == tokenizer.encode(TEXT)
    with pytest.raises(FileNotFoundError):
        V2XTokenizer.load(path + ".missing")


# ----------------------------------------------------------------------------- table writer

def test_build_v2x_from_a_table(tmp_path):
    rows = synthetic.synthetic_records("park", 30) + synthetic.synthetic_records("highway", 30)
    table = tmp_path / "table.csv"
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, ["Area", "Timestamp", "RSRP dBm", "Traffic Street Name",
                                    "datarate"])
        writer.writeheader()
        for i, row in enumerate(rows):
            writer.writerow({"Area": "Park" if i < 30 else "Highway",
                             "Timestamp": f"2021-06-24 {row['time'][:2]}:{row['time'][2:]}:07",
                             "RSRP dBm": float(row["rsrp"]) + 0.0123, "Traffic Street Name":
                             row["street"].replace("_", " "), "datarate": row["datarate"]})
    out = tmp_path / "layout"
    tokenizer = build_v2x(str(table), str(out), client_column="Area", time_column="Timestamp",
                          test_fraction=0.2)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["clients"] == ["highway", "park"] and meta["synthetic"] is False
    assert meta["records"] == {"train": {"highway": 24, "park": 24},
                               "test": {"highway": 6, "park": 6}}
    park = V2XTokens(str(out), split="train", client=1)
    assert park.split_token == tokenizer.time_id and len(park) == 24
    park_test = V2XTokens(str(out), split="test", client=1)
    decoded = {tokenizer.decode([t for t in seq.tolist() if t])
               for seq in np.concatenate([park.sequences, park_test.sequences])}
    expected = {record_text({"time": r["time"],
                             "rsrp_dbm": f"{round(float(r['rsrp']) + 0.0123, 2) + 0.0:.2f}",
                             "traffic_street_name": r["street"],
                             "datarate": f"{float(r['datarate']):.2f}"}) for r in rows[:30]}
    assert decoded == expected


# ----------------------------------------------------------------------------- synthetic data

def test_synthetic_writer_is_deterministic_labelled_and_idempotent(tmp_path):
    a = synthetic.write_synthetic_v2x(str(tmp_path / "a"), 40, 5, seed=3)
    synthetic.write_synthetic_v2x(str(tmp_path / "b"), 40, 5, seed=3)
    for split in ("train", "test"):
        names = sorted(os.listdir(os.path.join(a, split)))
        assert names == [f"{r}.bin" for r in sorted(synthetic.REGIONS)]
        for name in names:
            assert (tmp_path / "a" / split / name).read_bytes() == \
                (tmp_path / "b" / split / name).read_bytes()
    assert "SYNTHETIC" in (tmp_path / "a" / "README.txt").read_text()
    meta = v2x.read_meta(a)
    assert meta["synthetic"] is True and meta["records"]["test"]["tunnel"] == 5
    data = V2XTokens(a, split="test")
    assert data.synthetic and len(data) == 25 and data.split_token == meta["split_token"]
    stamp = os.stat(os.path.join(a, "train", "park.bin")).st_mtime_ns
    synthetic.write_synthetic_v2x(a, 40, 5, seed=3)
    assert os.stat(os.path.join(a, "train", "park.bin")).st_mtime_ns == stamp
    synthetic.write_synthetic_v2x(a, 20, 5, seed=3)  # other parameters: rewritten
    assert v2x.read_meta(a)["records"]["train"]["park"] == 20
    before = (tmp_path / "a" / "train" / "park.bin").read_bytes()
    synthetic.write_synthetic_v2x(a, 20, 9, seed=3)  # training records keep their stream
    assert (tmp_path / "a" / "train" / "park.bin").read_bytes() == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "mine.txt").write_text("x")
    with pytest.raises(FileExistsError):
        synthetic.write_synthetic_v2x(str(tmp_path / "other"), 10, 2)


def test_default_data_set_is_the_synthetic_copy(tmp_path, monkeypatch):
    root = str(tmp_path / "v2x_synthetic")
    monkeypatch.setattr(synthetic, "SYNTHETIC_ROOT", root)
    monkeypatch.setattr(v2x, "SYNTHETIC_ROOT", root)
    with pytest.raises(FileNotFoundError):
        datasets.create_dataset("v2x", download=False)
    train = datasets.create_dataset("v2x", client=4)
    assert train.synthetic and train.clients == ["tunnel"] and len(train) == 2000
    assert len(datasets.create_dataset("v2x", split="test")) == 5 * 200
    assert v2x.read_meta(root)["max_record_tokens"] <= 256
