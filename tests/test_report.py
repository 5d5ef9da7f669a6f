"""StageReport: the counts a stage hands to XCom and to its log line."""

from __future__ import annotations

from harvest.report import StageReport


def test_new_report_is_empty():
    report = StageReport("crawl")
    assert report.as_dict() == {"stage": "crawl", "done": 0, "failed": 0, "skipped": 0, "reasons": {}}
    assert str(report) == "crawl: 0 done, 0 failed, 0 skipped"


def test_count_increments_the_outcome_and_groups_reasons():
    report = StageReport("download")
    report.count("done")
    report.count("done")
    report.count("failed", "HTTP 404")
    report.count("failed", "HTTP 404")
    report.count("failed", "timed out")
    report.count("skipped", "too small")
    assert (report.done, report.failed, report.skipped) == (2, 3, 1)
    assert report.reasons == {"HTTP 404": 2, "timed out": 1, "too small": 1}


def test_reasons_drop_a_leading_url_so_failures_group():
    report = StageReport("crawl")
    report.count("failed", "http://a.example/x.jpg: HTTP 404")
    report.count("failed", "https://b.example/y.jpg: HTTP 404")
    report.count("failed", "HTTP 404")
    assert report.reasons == {"HTTP 404": 3}


def test_long_reasons_are_truncated():
    report = StageReport("extract")
    report.count("skipped", "x" * 200)
    [reason] = report.reasons
    assert reason == "x" * 80


def test_as_dict_includes_extra_and_orders_reasons_by_count():
    report = StageReport("download", extra={"shard": 3})
    for reason, times in [("rare", 1), ("common", 5), ("middle", 3)]:
        for _ in range(times):
            report.count("failed", reason)
    data = report.as_dict()
    assert data == {
        "stage": "download",
        "done": 0,
        "failed": 9,
        "skipped": 0,
        "reasons": {"common": 5, "middle": 3, "rare": 1},
        "shard": 3,
    }
    assert list(data["reasons"]) == ["common", "middle", "rare"]


def test_as_dict_keeps_only_the_ten_most_common_reasons():
    report = StageReport("crawl")
    for i in range(12):
        for _ in range(i + 1):
            report.count("failed", f"reason {i}")
    reasons = report.as_dict()["reasons"]
    assert len(reasons) == 10
    assert "reason 0" not in reasons and "reason 1" not in reasons
    assert reasons["reason 11"] == 12


def test_str_is_one_line_with_the_five_most_common_reasons():
    report = StageReport("download")
    report.count("done")
    for i in range(7):
        for _ in range(10 - i):
            report.count("skipped", f"r{i}")
    assert str(report) == "download: 1 done, 0 failed, 49 skipped (r0: 10, r1: 9, r2: 8, r3: 7, r4: 6)"


def test_reports_do_not_share_state():
    first, second = StageReport("a"), StageReport("b")
    first.count("failed", "boom")
    first.extra["x"] = 1
    assert second.reasons == {} and second.extra == {}
