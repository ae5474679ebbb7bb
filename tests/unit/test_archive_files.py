"""The archive's writes (local folder with fsync, and a pyarrow file system as an object store stands in) and
reading the dataset back as candle files: equal to the CSV it came from, one row per open time."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from configs.settings import ArchiveConfig
from bse_predict.archive.buffer import ArchiveBuffer
from bse_predict.archive.errors import ArchiveLocationError
from bse_predict.archive.layout import FileName
from bse_predict.archive.store import FileSystemStore, LocalStore, open_store
from bse_predict.archive.writer import write_plan
from bse_predict.candles.files import CandleFileError, CandleSeries, read_candle_files
from bse_predict.candles.schema import Candle
from bse_predict.candles.synthetic import synthetic_series

ROOT = Path(__file__).resolve().parents[2]
TINY = ROOT / "tests" / "data" / "candles" / "TINYUSDT-1h.csv"
CONFIG = ArchiveConfig()


def _candles(series: CandleSeries) -> list[Candle]:
    return [Candle(symbol=series.symbol, timeframe=series.timeframe, open_time=int(t), open=float(o), high=float(h),
                   low=float(lo), close=float(c), volume=float(v))
            for t, (o, h, lo, c, v) in zip(series.open_time_ms, series.ohlcv, strict=True)]


def _archive(store, series: list[CandleSeries], partition_of: dict[str, int] | None = None,
             batch: int = 10_000, first_offset: int = 0) -> int:
    """Every candle through buffers and flushes as the archiver makes them; returns the next offset."""
    buffer = ArchiveBuffer("candles")
    offset = first_offset
    for one in series:
        for candle in _candles(one):
            buffer.add((partition_of or {}).get(one.symbol, 0), offset, candle, now_s=0.0)
            offset += 1
            if buffer.held >= batch:
                plan = buffer.plan("futures")
                write_plan(store, plan)
                buffer.flushed(plan)
    plan = buffer.plan("futures")
    write_plan(store, plan)
    buffer.flushed(plan)
    return offset


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def test_a_written_dataset_reads_back_equal_to_the_csv(tmp_path: Path) -> None:
    (csv,) = read_candle_files([TINY])
    _archive(LocalStore(tmp_path, CONFIG), [csv], batch=37)  # many flushes into one month: merged each time
    (back,) = read_candle_files([tmp_path])
    assert (back.symbol, back.timeframe, back.duplicates_dropped) == (csv.symbol, "1h", 0)
    np.testing.assert_array_equal(back.open_time_ms, csv.open_time_ms)
    np.testing.assert_array_equal(back.ohlcv, csv.ohlcv)
    (only,) = _files(tmp_path)  # one file per symbol-month, not one per flush
    assert only.parent.relative_to(tmp_path).as_posix() == "market=futures/symbol=TINYUSDT/month=2026-01"
    assert FileName.parse(only.name) == FileName("candles", 0, 0, len(csv.open_time_ms) - 1)
    assert back.source == tmp_path / "market=futures"


def test_months_and_symbols_are_partitions_and_read_back_as_separate_series(tmp_path: Path) -> None:
    end_ms = 1_740_783_600_000  # 2025-02-28 23:00 UTC, the last open time
    generated = [synthetic_series("AAAUSDT", 24 * 70, seed=1, end_ms=end_ms),
                 synthetic_series("BBBUSDT", 24 * 40, seed=2, end_ms=end_ms)]
    _archive(LocalStore(tmp_path, CONFIG), generated, partition_of={"AAAUSDT": 0, "BBBUSDT": 1}, batch=500)
    folders = sorted({p.parent.relative_to(tmp_path).as_posix() for p in _files(tmp_path)})
    assert folders == [f"market=futures/symbol=AAAUSDT/month={m}" for m in ("2024-12", "2025-01", "2025-02")] + \
                      [f"market=futures/symbol=BBBUSDT/month={m}" for m in ("2025-01", "2025-02")]
    back = {s.symbol: s for s in read_candle_files([tmp_path])}
    for one in generated:
        np.testing.assert_array_equal(back[one.symbol].open_time_ms, one.open_time_ms)
        np.testing.assert_array_equal(back[one.symbol].ohlcv, one.ohlcv)


def test_a_replay_of_the_same_offsets_rewrites_the_same_file(tmp_path: Path) -> None:
    (csv,) = read_candle_files([TINY])
    store = LocalStore(tmp_path, CONFIG)
    _archive(store, [csv])
    before = _files(tmp_path)
    _archive(store, [csv])  # the same records at the same offsets: a crash before the commit, replayed
    assert _files(tmp_path) == before
    (back,) = read_candle_files([tmp_path])
    np.testing.assert_array_equal(back.ohlcv, csv.ohlcv)


def test_a_later_value_of_a_candle_wins_across_flushes_and_files(tmp_path: Path) -> None:
    (csv,) = read_candle_files([TINY])
    store = LocalStore(tmp_path, CONFIG)
    next_offset = _archive(store, [csv])
    corrected = CandleSeries(csv.symbol, "1h", csv.open_time_ms[:5], csv.ohlcv[:5] * 1.01, csv.source)
    _archive(store, [corrected], first_offset=next_offset)
    (only,) = _files(tmp_path)
    assert FileName.parse(only.name) == FileName("candles", 0, 0, next_offset + 4)
    (back,) = read_candle_files([tmp_path])
    np.testing.assert_allclose(back.ohlcv[:5], csv.ohlcv[:5] * 1.01)
    np.testing.assert_array_equal(back.ohlcv[5:], csv.ohlcv[5:])


def test_a_crash_between_the_rename_and_the_removal_is_read_once_and_merged_away(tmp_path: Path) -> None:
    """The older file left beside the newer one that holds all its rows: readers keep one row per open time."""
    (csv,) = read_candle_files([TINY])
    store = LocalStore(tmp_path, CONFIG)
    head = CandleSeries(csv.symbol, "1h", csv.open_time_ms[:100], csv.ohlcv[:100], csv.source)
    _archive(store, [head])
    (old,) = _files(tmp_path)
    kept = old.read_bytes()
    _archive(store, [CandleSeries(csv.symbol, "1h", csv.open_time_ms[100:], csv.ohlcv[100:], csv.source)],
             first_offset=100)
    old.write_bytes(kept)  # as if the removal never happened
    assert len(_files(tmp_path)) == 2
    (back,) = read_candle_files([tmp_path])
    assert back.duplicates_dropped == 100
    np.testing.assert_array_equal(back.ohlcv, csv.ohlcv)
    _archive(store, [CandleSeries(csv.symbol, "1h", csv.open_time_ms[-1:], csv.ohlcv[-1:], csv.source)],
             first_offset=500)
    assert len(_files(tmp_path)) == 1  # the folder's next flush merged both


def test_a_failed_write_leaves_no_temporary_file_and_the_old_file_whole(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    (csv,) = read_candle_files([TINY])
    store = LocalStore(tmp_path, CONFIG)
    _archive(store, [csv])
    before = {p: p.read_bytes() for p in _files(tmp_path)}

    def disk_full(descriptor: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError):
        _archive(store, [csv], first_offset=1_000)
    monkeypatch.undo()
    assert {p: p.read_bytes() for p in _files(tmp_path)} == before  # no .tmp left, nothing half-written


def test_an_object_store_through_pyarrow_file_systems(tmp_path: Path) -> None:
    """A pyarrow FileSystem that is not the local folder (here a SubTreeFileSystem over a folder, as an
    S3FileSystem would be) writes the same dataset, and a URL reads it back."""
    (csv,) = read_candle_files([TINY])
    (tmp_path / "bucket").mkdir()
    filesystem = pafs.SubTreeFileSystem(str(tmp_path / "bucket"), pafs.LocalFileSystem())
    store = FileSystemStore(filesystem, "archive", CONFIG)
    _archive(store, [csv], batch=50)
    _archive(store, [csv], batch=50)  # replayed: rewritten, not duplicated
    assert len(_files(tmp_path / "bucket" / "archive")) == 1
    for source in (f"file://{tmp_path}/bucket/archive", Path(f"file://{tmp_path}/bucket/archive")):
        (back,) = read_candle_files([source])
        np.testing.assert_array_equal(back.ohlcv, csv.ohlcv)


def test_open_store_picks_the_store_and_refuses_what_it_cannot_open(tmp_path: Path) -> None:
    assert isinstance(open_store(str(tmp_path / "a"), CONFIG), LocalStore) and (tmp_path / "a").is_dir()
    assert isinstance(open_store(f"file://{tmp_path}/b", CONFIG), LocalStore)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArchiveLocationError, match="is a file"):
        open_store(str(tmp_path / "file"), CONFIG)
    with pytest.raises(ArchiveLocationError, match="cannot open"):
        open_store("nosuch://bucket/x", CONFIG)


def test_single_parquet_files_and_folders_without_data(tmp_path: Path) -> None:
    (csv,) = read_candle_files([TINY])
    _archive(LocalStore(tmp_path / "archive", CONFIG), [csv])
    (written,) = _files(tmp_path / "archive")
    (back,) = read_candle_files([written])  # one archive file: its symbol from its folders
    assert back.symbol == "TINYUSDT" and back.source == written
    plain = pq.read_table(written).drop_columns(["kafka_offset", "kafka_partition", "timeframe"])
    pq.write_table(plain, tmp_path / "TINYUSDT-1h.parquet")
    (named,) = read_candle_files([tmp_path / "TINYUSDT-1h.parquet"])  # the symbol from the file name
    np.testing.assert_array_equal(named.ohlcv, csv.ohlcv)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CandleFileError, match="no .csv, .csv.gz or .parquet"):
        read_candle_files([tmp_path / "empty"])


def test_a_folder_of_csv_files_stays_a_csv_source(tmp_path: Path) -> None:
    (tmp_path / TINY.name).write_bytes(TINY.read_bytes())
    _archive(LocalStore(tmp_path / "archive", CONFIG), read_candle_files([TINY]))
    (csv,) = read_candle_files([tmp_path])  # the archive below is not read twice into it
    assert csv.source == tmp_path / TINY.name


def test_without_pyarrow_a_parquet_source_says_what_to_install(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    _archive(LocalStore(tmp_path, CONFIG), read_candle_files([TINY]))
    monkeypatch.setitem(__import__("sys").modules, "pyarrow", None)  # as on a serving install
    with pytest.raises(CandleFileError, match=r"pip install 'bse-predict\[archive\]'"):
        read_candle_files([tmp_path])
