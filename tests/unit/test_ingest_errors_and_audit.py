"""Pieces of the consumer and the auditor that need no broker: the codecs kafka-python
finds with the project's install, the message of an error that stops the consumer, the
auditor's offset ranges, and the digest of the client library's log lines."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from kafka import TopicPartition
from kafka.errors import CorruptRecordError, TopicAuthorizationFailedError, UnsupportedCodecError

from ingestion.consumer import ConsumeHalted, halted
from ingestion.verify import _as_ranges, missing_ranges


def test_the_install_gives_kafka_python_every_codec():
    import kafka.codec as codec

    assert codec.has_gzip() and codec.has_snappy() and codec.has_lz4() and codec.has_zstd()


@pytest.mark.parametrize("codec,package", [("lz4", "lz4"), ("zstd", "zstandard"), ("snappy", "python-snappy")])
def test_a_missing_codec_library_names_the_codec_the_place_and_the_package(codec, package):
    exc = UnsupportedCodecError(f"Libraries for {codec} compression codec not found")
    err = halted(exc, TopicPartition("tx", 3), 1200)
    assert isinstance(err, ConsumeHalted) and err.exit_code != 0
    text = str(err)
    assert f"{codec}-compressed batch at topic tx partition 3 offset 1200" in text
    assert f"pip install {package}" in text and "the next run resumes at it" in text


def test_an_unknown_codec_a_corrupt_batch_and_other_errors_each_say_what_to_do():
    unknown = str(halted(UnsupportedCodecError("Unrecognized compression type: 7"), TopicPartition("tx", 0), 5))
    assert "Unrecognized compression type: 7" in unknown and "none, gzip, snappy, lz4 or zstd" in unknown
    corrupt = str(halted(CorruptRecordError("Record batch for partition tx-0 at offset 5 failed crc check")))
    assert "corrupt batch" in corrupt and "failed crc check" in corrupt and "kafka-dump-log" in corrupt
    other = str(halted(TopicAuthorizationFailedError({"tx"})))
    assert "TopicAuthorizationFailedError" in other and "fix its cause" in other
    unclassified = str(halted(RuntimeError("StopIteration raised unpacking messageset")))
    assert "RuntimeError: StopIteration raised unpacking messageset" in unclassified


def test_missing_ranges_are_all_listed_and_clipped_to_the_range_asked():
    landed = np.array([0, 1, 2, 5, 6, 9], dtype=np.int64)
    assert missing_ranges(landed) == [(3, 4), (7, 8)]
    assert missing_ranges(landed, 0, 12) == [(3, 4), (7, 8), (10, 11)]
    # Offsets before the first one still in Kafka are not missing (retention deleted them).
    assert missing_ranges(landed, 6, 10) == [(7, 8)]
    assert missing_ranges(np.array([1, 2], dtype=np.int64), 5, 8) == [(5, 7)]
    assert missing_ranges(np.array([], dtype=np.int64), 3, 3) == []
    many = np.arange(0, 200, 2, dtype=np.int64)  # every other offset: 99 gaps, none dropped
    assert len(missing_ranges(many)) == 99


def test_as_ranges_joins_consecutive_offsets():
    assert _as_ranges([]) == []
    assert _as_ranges([3, 4, 5, 9, 11, 12]) == [(3, 5), (9, 9), (11, 12)]


def test_the_client_library_log_is_digested_not_printed(monkeypatch, caplog):
    from cli import ingest

    clock = {"now": 1000.0}
    monkeypatch.setattr(ingest.time, "monotonic", lambda: clock["now"])
    digest = ingest._LibraryDigest()
    record = lambda msg: logging.LogRecord("kafka.net", logging.ERROR, __file__, 1, msg, None, None)  # noqa: E731
    with caplog.at_level(logging.WARNING, logger="skewless.kafka"):
        for i in range(20):  # a score of reconnect errors within seconds: nothing shown
            clock["now"] += 0.5
            digest.emit(record(f"Connection failed #{i}"))
        assert not caplog.records
        clock["now"] += ingest.LIBRARY_SUMMARY_EVERY_S  # the condition lasts: one line naming the latest
        digest.emit(record("Connection failed #20"))
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert "21 warnings" in line and "Connection failed #20" in line and "--verbose" in line
