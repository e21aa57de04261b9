"""bench.footprint's pure parts: /proc/PID/status and the window summary."""
from __future__ import annotations

import pytest

from bench.footprint import ProcSample, parse_status, summarize


def test_parse_status_reads_the_numbers():
    text = "Name:\taircrew\nVmHWM:\t   41000 kB\nVmRSS:\t   39000 kB\nThreads:\t3\n"
    assert parse_status(text) == {"VmHWM": 41000, "VmRSS": 39000, "Threads": 3}


def test_summarize_takes_the_largest_rss_and_the_cpu_of_the_window():
    first = ProcSample(rss_kb=30000, anon_kb=20000, file_kb=10000, hwm_kb=31000, cpu_s=1.0,
                       threads=3, switches=100)
    later = [ProcSample(rss_kb=kb, anon_kb=kb - 10000, file_kb=10000, hwm_kb=42000,
                        cpu_s=cpu, threads=3, switches=switches)
             for kb, cpu, switches in ((40960, 1.1, 110), (35840, 1.2, 120))]
    out = summarize(first, later, wall_s=20.0)
    assert out["rss_mb"] == 40.0 and out["rss_kb"] == 40960 and out["rss_decimal_mb"] == 41.9
    assert out["idle_cpu_pct"] == pytest.approx(1.0)     # 0.2 s of CPU in 20 s
    assert out["wakeups_per_s"] == 1.0 and out["rss_peak_mb"] == 41.0
